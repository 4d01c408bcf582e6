from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._gate import GateGuard as GateGuard

__version__: str

__all__ = ["Gate", "GateClosed", "GateGuard", "__version__"]
