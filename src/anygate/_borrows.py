"""Which bounded gates a task holds through ``acquire()``: the borrower check.

A task that ``acquire()``s a bounded gate it already holds that way is refused
with :exc:`RuntimeError`, as a ``CapacityLimiter`` refuses to lend to its own
borrower: at a limit of 1 it would wait for itself forever.

anyio's task identity (``anyio.get_current_task()``) costs more than the whole
uncontended acquire, so the borrows are kept in a context variable: each task
runs in a context of its own. A task's children start with a copy of it, so
an entry is trusted only once it is proved to have been set in the current
context: ``ContextVar.reset()`` of the token that set it succeeds only there.
That proof is made only when the entry would refuse, never on the way in.

The mappings are never changed once set (a new one is set for each borrow),
so a child never changes its parent's. An entry holds its guard, whose
``_holds`` says whether it is still held, wherever it was released: a guard
leaked by the task that acquired it is then released when that task's context
is freed, or when the task next acquires.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ._core import GateCore
    from ._guards import GateGuard


#: A borrow: ``[guard, token]``, the guard of a hold taken through acquire(),
#: and the token of the ``BORROWS.set()`` that noted it (``None`` once the
#: guard is released and the borrow dropped). A list: the cheapest to build.
Borrow: TypeAlias = "list[Any]"

#: The bounded gates the task holds through acquire(), each with its borrow.
BORROWS: ContextVar[dict[GateCore, Borrow]] = ContextVar("anygate_borrows")


def check_borrower(gate: GateCore, borrows: dict[GateCore, Borrow], borrow: Borrow) -> None:
    """Raise if ``borrow``, a held borrow of ``gate`` in ``borrows`` (what
    ``BORROWS`` holds here), was noted by the current task; the callers look
    that it is held, so that this runs only when it may refuse."""
    if not _set_here(borrow, borrows):
        return
    raise RuntimeError(
        f"this task already holds {gate._describe()} through acquire(): a task "
        "may hold a bounded gate through acquire() only once at a time, since "
        "at the limit it would wait for itself forever; release the first "
        "guard, or clone() it for more work under the same hold"
    )


def _set_here(borrow: Borrow, borrows: dict[GateCore, Borrow]) -> bool:
    """Whether ``borrow`` was noted in the current context, not inherited;
    ``borrows``: the context's mapping, which stays set."""
    token = borrow[1]
    if token is None:
        return False
    try:
        BORROWS.reset(token)
    except (ValueError, RuntimeError):
        return False
    # Put back what was there, with a token to prove it by next time.
    borrow[1] = BORROWS.set(borrows)
    return True


def record_borrow(gate: GateCore, guard: GateGuard) -> None:
    """Note that the current task holds ``gate`` through ``acquire()``, with ``guard``.

    A released borrow is never looked at again: it is dropped here, with its
    token. That token refers to the mapping it replaced, which refers to the
    borrows before it, and so on: dropping it keeps that chain as short as the
    borrows still held.
    """
    borrow: Borrow = [guard, None]
    borrows = BORROWS.get(None)
    if borrows is None:
        new = {gate: borrow}
    else:
        new = {}
        for held, old in borrows.items():
            if old[0]._holds is None:
                old[1] = None
            else:
                new[held] = old
        new[gate] = borrow
    borrow[1] = BORROWS.set(new)
