from ._diagnostics import GateStatistics as GateStatistics
from ._diagnostics import Holder as Holder
from ._exceptions import GateClosed as GateClosed
from ._gate import Gate as Gate
from ._gate import GateGuard as GateGuard
from ._tasks import gated as gated

__version__: str

__all__ = ["Gate", "GateClosed", "GateGuard", "GateStatistics", "Holder", "__version__", "gated"]
