"""What the tests that run real servers share: the servers, each with its client's backend.

A test decorated with :data:`each_server` (or ``servers(...)`` for some of
them) runs once per server, with ``server_kind`` set to ``(server, backend)``
and its client on that backend (asyncio's, with uvloop, for uvloop).
"""

from __future__ import annotations

from typing import Any

import pytest

#: Each server and backend, with the anyio backend of its client.
SERVERS: dict[str, tuple[tuple[str, str], tuple[str, dict[str, Any]]]] = {
    "hypercorn-asyncio": (("hypercorn", "asyncio"), ("asyncio", {})),
    "hypercorn-uvloop": (("hypercorn", "uvloop"), ("asyncio", {"use_uvloop": True})),
    "hypercorn-trio": (("hypercorn", "trio"), ("trio", {})),
    "uvicorn-asyncio": (("uvicorn", "asyncio"), ("asyncio", {})),
    "uvicorn-uvloop": (("uvicorn", "uvloop"), ("asyncio", {"use_uvloop": True})),
}


def servers(*names: str) -> pytest.MarkDecorator:
    """Run the test on the servers named (all of them if none is)."""
    return pytest.mark.parametrize(
        ("server_kind", "anyio_backend"),
        [pytest.param(*SERVERS[name], id=name) for name in names or SERVERS],
    )


each_server = servers()
