"""How many WebRTC calls one media worker takes on this host: ``MAX_CALLS_PER_WORKER=auto``.

Why not a fixed number: a limit is right for one machine only. ``bench/capacity.py`` on two 2-core
machines of the same kind (an older tree): on the faster (four tiny.en decodes of short turns ~530 ms
of CPU) 10 calls kept turn p95 at 0.75–1.0 s; on the slower (~790 ms, 15.7 % of a core per call at
4 calls against 10.4 %) 5 calls had p95 0.87 s, 6 had 1.54 s, and 10 let in under the fixed limit
had p50 of 6–9 s: the "all lines busy" that protects the calls in progress came far too late. A call's cost
follows the cost of its decodes, so the limit is a budget of decode time over one reference decode
timed at the worker's warm-up (``engine_pool.warm_up``), scaled by the cores this process may use,
and never more than one worker's event loop carries (``MAX_PER_WORKER``).

The reference is the model's own short-window decode of 2 s of faint noise (the encoder, most of a
decode's cost, runs on the whole window whatever is said), the fastest of three, so a busy moment
during the warm-up does not shrink the limit. Until it is measured the worker uses ``FALLBACK``.
An explicit ``MAX_CALLS_PER_WORKER`` (0 = no limit) skips all of this.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Milliseconds of reference decode per call a 2-core host carries. Calibrated on the tree of the
# twelfth session (a call costs ~20 % less than when this was 450: inbound audio decoded on the loop,
# an idle line's Silero runs batched): a host whose reference takes 52 ms carried 12 calls at turn
# p95 0.87-1.0 s, 14 at 1.47 s and 16 at 1.62 s, callers included (bench/capacity.py, no limit). So
# 700 ms gives it 12 (13, capped below) and keeps 12 up to a 58 ms reference: the warm-up's timing
# varies by a few ms, and with 650 one run measured 11. A host at 78 ms gets 8 (docs/performance.md).
BUDGET_MS_PER_TWO_CORES = 700.0
# Whatever the cores, one worker's event loop (one thread) carries about this many: 12 calls on one
# worker kept p95 <= 1.0 s and 16 reached 1.6 s on the 52 ms host above. More cores take more
# workers, not more calls per worker.
MAX_PER_WORKER = 12
FALLBACK = 10  # before the warm-up has measured (the fixed default this replaces)
REFERENCE_SECONDS = 2.0
REFERENCE_RUNS = 3

_measured: int | None = None
_reference_ms: float | None = None


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def limit_for(reference_ms: float, cores: int) -> int:
    """Calls per worker for a host whose reference decode takes ``reference_ms`` on ``cores`` cores."""
    calls = int(BUDGET_MS_PER_TWO_CORES * max(cores, 1) / 2 / max(reference_ms, 1.0))
    return max(1, min(calls, MAX_PER_WORKER))


def measure(asr: Any) -> int:
    """Time the reference decode on ``asr`` (blocking, ~0.3 s) and size the limit from it."""
    global _measured, _reference_ms
    noise = (np.random.default_rng(0).standard_normal(int(16000 * REFERENCE_SECONDS)) * 1e-3).astype(np.float32)
    runs = []
    for _ in range(REFERENCE_RUNS):
        started = time.perf_counter()
        asr.transcribe(noise, language="en")
        runs.append((time.perf_counter() - started) * 1000)
    _reference_ms, cores = min(runs), usable_cores()
    _measured = limit_for(_reference_ms, cores)
    log.info("call limit sized to this host: %d calls per worker (reference decode %.0f ms, %d cores)",
             _measured, _reference_ms, cores)
    return _measured


def calls_limit() -> int:
    """The measured limit, or ``FALLBACK`` before the warm-up has measured it."""
    return FALLBACK if _measured is None else _measured


def reference_ms() -> float | None:
    return _reference_ms
