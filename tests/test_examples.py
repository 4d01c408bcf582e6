"""Each example in examples/ runs, on each backend, and checks its own outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, backend: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
class TestExamples:
    def test_graceful_server(self, backend: str) -> None:
        out = run_example("graceful_server.py", backend)
        assert "served 35, cancelled after grace 5, refused after close 10" in out
        assert "is taking longer than expected" in out

    def test_tenant_shutdown(self, backend: str) -> None:
        out = run_example("tenant_shutdown.py", backend)
        assert "page reads finished: 6, long-polls cancelled: 2" in out
        assert "compactions finished: 1, requests refused after: 2" in out
        assert "timelines refused during shutdown: 1" in out

    def test_sync_portal(self, backend: str) -> None:
        out = run_example("sync_portal.py", backend)
        assert "all batches complete" in out
