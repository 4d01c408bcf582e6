from anyio import ClosedResourceError

class GateClosed(ClosedResourceError):
    """Raised when trying to enter a gate that is closed."""
