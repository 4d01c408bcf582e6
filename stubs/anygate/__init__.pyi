from ._diagnostics import Holder as Holder
from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._gate import GateGuard as GateGuard

__version__: str

__all__ = ["Gate", "GateClosed", "GateGuard", "Holder", "__version__"]
