"""Backend-neutral gates: refuse new work, then wait for the work in progress."""

from ._diagnostics import Holder as Holder
from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._gate import GateGuard as GateGuard

__version__ = "0.1.0"

__all__ = ["Gate", "GateClosed", "GateGuard", "Holder", "__version__"]
