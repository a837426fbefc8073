"""The Go client (clients/go) passes its own tests against a real stack, and is gofmt- and
vet-clean.

``go test`` runs as a child process, told the URLs of the harness's servers: a real stack (two
brokers, mock and fake upstreams) that the Go tests steer over NATS, and a bare server where
they play the broker themselves (tests/support/harness.py). The module builds offline from
Debian's Go sources, vendored into clients/go by ``scripts/dev go-setup`` (``scripts/dev
test`` and CI run it). Outside CI a machine without Go skips these tests; in CI they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.harness import Harness, running_harness

pytestmark = [pytest.mark.go, pytest.mark.process]

GO_DIR = Path(__file__).parents[2] / "clients" / "go"
#: Compiling the client and the vendored nats.go from scratch takes a minute on 2 cores.
GO_TEST_TIMEOUT_S = 300


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed: .ci/run installs it (scripts/dev go-setup)")
        pytest.skip("go is not installed (scripts/dev go-setup installs it)")
    assert (GO_DIR / "vendor" / "modules.txt").is_file(), (
        "clients/go/vendor is missing: run scripts/dev go-setup (scripts/dev test does)"
    )
    return go


def _gofmt(go: str) -> str:
    """gofmt: on the PATH, or beside the go binary (Debian links only go into /usr/bin)."""
    return shutil.which("gofmt") or str(Path(go).resolve().parent / "gofmt")


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """A command in clients/go, offline; its exit code and its output."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=GO_DIR,
        env={**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=vendor", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(GO_TEST_TIMEOUT_S):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path) as running:
        yield running


@pytest.mark.timeout(GO_TEST_TIMEOUT_S + 30)
async def test_go_client_passes_go_test(harness: Harness) -> None:
    """`go test` in clients/go passes against the harness's stack and bare server: chat,
    streams, messages, embeddings, responses (whole, streamed, stored, a background stream
    resumed), models, typed errors, cancels by context, deadlines, a lost broker with one
    upstream call, 413 before publishing, stream retries and gaps, batches."""
    code, out = await _run(_go(), "test", "-count=1", "-v", "./...", env=harness.environ())
    assert code == 0, out[-8000:]
    skipped = [line for line in out.splitlines() if line.strip().startswith("--- SKIP")]
    assert not skipped, "\n".join(skipped)
    assert "--- PASS: TestABrokerLostMidCallCostsNoSecondUpstreamCall" in out
    assert "--- PASS: TestAStreamedResponseIsItsEventsInOrderEndingWithCompleted" in out
    # the example of docs/clients.md runs as written against the stack
    code, out = await _run(_go(), "run", "./example", env={"NATS_URL": harness.nats_url})
    assert code == 0, out
    assert "404 model_not_found" in out.splitlines(), out
    assert out.splitlines()[-2:] == ["completed", "a 200"], out


async def test_go_client_is_gofmt_and_vet_clean() -> None:
    """gofmt lists no file to reformat and go vet finds nothing."""
    go = _go()
    gofmt = _gofmt(go)
    code, out = await _run(gofmt, "-l", ".")
    assert (code, [f for f in out.split() if not f.startswith("vendor/")]) == (0, []), out
    code, out = await _run(go, "vet", "./...")
    assert code == 0, out
