"""Keep long-lived objects out of Python's full garbage collections.

A full collection walks every tracked object and holds the event loop meanwhile. In a server
process most objects live long: Django's, the engines', the modules', and each open socket's
(about 150 per connection). With 5,000 sockets open a full pass took 560–840 ms and ran every
6–8 s under a ping load, because objects that merely happen to be alive at a young collection are
promoted and count towards the next full pass (measured with bench/signaling.py). Moving objects
to the permanent generation makes each pass walk only what was created since.

Frozen objects are never examined, so a reference cycle among them that becomes garbage (a
closed connection's, typically) stays until the next :func:`full_collection`, which the server
runs every ``GC_FULL_COLLECTION_SECONDS``: one pause per hour by default instead of one every few
seconds, and memory held by dead cycles bounded by the connections closed in that hour.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze_loaded_objects() -> int:
    """Collect once, then freeze what survived; returns how many objects are frozen now."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def freeze_new_objects() -> None:
    """Move everything tracked now to the permanent generation (constant time: a list splice)."""
    gc.freeze()


def _freeze_after_full_pass(phase: str, info: dict) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def freeze_survivors_of_full_passes(enabled: bool = True) -> None:
    """Freeze what each automatic full pass leaves alive, so the next one walks only newer objects.

    Why: between two periodic freezes the objects that live on (a connecting socket's, about 150
    each) are promoted to the oldest generation, and Python runs a full pass whenever a quarter
    more have been promoted since the last one; after a freeze that last count is small, so while
    connections keep arriving full passes came every ~1.5 s, each walking everything since the
    freeze: 6 ms growing to 130 ms during a 5,000-socket ramp (bench/signaling.py, GC probe).
    Survivors of a full pass are long-lived by definition; frozen, each pass costs only what was
    created since the previous one. Runs in the "stop" callback, after the collection is complete.
    """
    if _freeze_after_full_pass in gc.callbacks:
        gc.callbacks.remove(_freeze_after_full_pass)
    if enabled:
        gc.callbacks.append(_freeze_after_full_pass)


def full_collection() -> int:
    """Unfreeze, collect everything (the one long pause), freeze the survivors again."""
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    took_ms = round((time.perf_counter() - started) * 1000)
    logger.info("full garbage collection", extra={"unreachable": found, "frozen": gc.get_freeze_count(), "ms": took_ms})
    return found


class Housekeeping:
    """Freeze every ``freeze_every`` seconds; a full collection every ``full_every`` seconds."""

    def __init__(self, *, freeze_every: float, full_every: float, clock=time.monotonic) -> None:
        self.freeze_every = freeze_every
        self.full_every = full_every
        self.clock = clock
        self.next_full = clock() + full_every

    def step(self) -> str:
        if self.clock() >= self.next_full:
            self.next_full = self.clock() + self.full_every
            full_collection()
            return "full"
        freeze_new_objects()
        return "freeze"
