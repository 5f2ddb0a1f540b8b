"""Keep the objects loaded at start-up out of Python's full garbage collections.

A full collection walks every tracked object. In a server process most of them are Django's,
the engines' and the modules' own and live as long as the process, yet each full pass re-walked
them: with 1,000 sockets open the passes took 150–270 ms, during which no frame was read or sent
(measured with bench/signaling.py). Moving them to the permanent generation once they are loaded
makes each full pass walk only what connections and calls create.

Frozen objects are never examined again, so a reference cycle among them is never freed; freezing
right after loading (and after the engines' warm-up) keeps that to objects meant to live forever.
"""

from __future__ import annotations

import gc


def freeze_loaded_objects() -> int:
    """Collect once, then freeze what survived; returns how many objects are frozen now."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
