"""Deployment files: compose.yaml parses, and every file it or the image refers to exists."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def test_compose_parses_and_references_exist() -> None:
    """Every service has an image or a build; mounted repo files exist; commands are ours."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "redis", "broker-1", "broker-2", "worker-mock", "bridge"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
        if "build" in service:
            assert service["command"][0] in {"broker", "worker", "bridge", "up"}, name
    assert (ROOT / "Dockerfile").exists()
    for copied in ("broker", "workers", "schemas", "pyproject.toml", "README.md"):
        assert (ROOT / copied).exists()


def test_nats_configs_have_no_python() -> None:
    """nats/ holds server configs only: no package that could shadow the nats client."""
    assert not (ROOT / "nats" / "__init__.py").exists()
    assert {p.suffix for p in (ROOT / "nats").iterdir()} == {".conf"}
