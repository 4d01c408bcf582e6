from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_graceful_server(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "graceful_server.py"), "--backend", backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "served 35, cancelled after grace 5, refused after close 10" in result.stdout
    assert "is taking longer than expected" in result.stdout
