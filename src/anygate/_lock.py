"""A gate's lock, which never blocks a finalizer, and the work it is owed."""

from __future__ import annotations

from collections.abc import Callable
from threading import RLock, get_ident

from typing_extensions import final


@final
class GateLock:
    """Serialises a gate's changes of state: a close, a reopen, the line of waiters.

    Its rules, written here once:

    * **Nothing calls out under it.** A locked region changes state and returns
      what is to be done; waking tasks, logging, shutting children and settling
      a parent happen after it is let go.
    * **It never blocks a finalizer or a signal handler.** A release can run in
      a finalizer at any allocation, or in a signal handler between any two
      bytecodes, and so inside a locked region of the same gate in the same
      thread. Such work only *tries* the lock: what finds it taken is *owed*,
      and the holder does it as it lets go (:meth:`settle`, :meth:`defer`).
    * **Owed work is never lost.** :attr:`owed` is cleared before the work
      that pays it reads the state, and set again if that work is interrupted.
    * **Taking it survives a KeyboardInterrupt**: an interrupt landing as the
      acquire returns gives the lock back.

    :param settle: the gate's settling, called by whoever lets the lock go
        while a settle is owed
    """

    __slots__ = ("_deferred", "_lock", "_owner", "_settle", "owed")

    def __init__(self, settle: Callable[[], None]) -> None:
        # Reentrant only so that an interrupt landing right after an acquire can
        # be undone (RLock._is_owned); never taken twice, since every take
        # first checks _owner.
        self._lock = RLock()
        #: The thread holding the lock.
        self._owner: int | None = None
        #: A settle is owed by the lock's holder.
        self.owed = False
        self._settle = settle
        # Calls requested inside a locked region by a signal handler or a
        # finalizer in the owner's thread, made as the region is left.
        self._deferred: list[Callable[[], object]] = []

    def held_here(self) -> bool:
        """Whether this thread holds the lock: a handler interrupted its region."""
        return self._owner == get_ident()

    def __enter__(self) -> None:
        """Take the lock, waiting for it; not from inside its own region."""
        me = get_ident()
        if self._owner == me:
            raise RuntimeError(
                "a gate was used from a signal handler or finalizer that interrupted "
                "the gate's own locked region; only entering, releasing, cloning and "
                "close_nowait() are allowed there"
            )
        lock = self._lock
        try:
            lock.acquire()
            self._owner = me
        except BaseException:
            # Interrupted as the acquire returned: give the lock back.
            if lock._is_owned():  # type: ignore[attr-defined]
                self._owner = None
                lock.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        """Let the lock go, then do what was owed meanwhile.

        An interrupt as the release returns still pays. (One as this method
        starts, before anything, is the window that every Python-level exit
        has; the gate's releases never take this path.)
        """
        self._owner = None
        try:
            self._lock.release()
        finally:
            self.pay()

    def try_enter(self) -> bool:
        """Take the lock if it is free, without waiting: for finalizer-safe work.

        Not from inside this thread's own region (see :meth:`held_here`). An
        interrupt as it returns leaves the lock taken: the caller's handler
        calls :meth:`leave_if_taken`.
        """
        me = get_ident()
        if self._owner == me or not self._lock.acquire(False):
            return False
        self._owner = me
        return True

    def leave(self) -> None:
        """Let the lock go without paying: for a settle, which loops."""
        self._owner = None
        self._lock.release()

    def leave_if_taken(self) -> None:
        """Let the lock go if this thread took it: the interrupt policy of a
        caller of :meth:`try_enter` that was not inside its own region."""
        if self._lock._is_owned():  # type: ignore[attr-defined]
            self._owner = None
            self._lock.release()

    def defer(self, call: Callable[[], object]) -> None:
        """Make ``call`` as the locked region of this thread is left."""
        self._deferred.append(call)
        self.owed = True

    def run_deferred(self) -> None:
        """Make the calls deferred by :meth:`defer`, oldest first."""
        deferred = self._deferred
        while deferred:
            deferred.pop(0)()

    def pay(self) -> None:
        """Do the deferred calls, then settle if a settle is owed."""
        self.run_deferred()
        if self.owed:
            self._settle()
