"""Native thread pools inside the engines' libraries, set for many small jobs on two shared cores.

numpy's OpenBLAS starts one worker thread per core at import, at normal priority, and after each
BLAS call that worker spins (busy-waits) for the next one instead of sleeping. The engines make
such calls all the time: every Whisper log-mel feature computation (each ASR decode, each Smart
Turn inference) is a ``mel_filters @ spectrogram`` product. Measured here: 40 Smart Turn
feature computations 50 ms apart kept the spinning worker at ~85 % of a core while the thread
doing the work used 0.4 s; in the server at 4 calls that worker took 16 % of a core, at the
event loops' priority. The products are small (80 × 201 by 201 × 800): one thread does them as
fast, so OpenBLAS is set to one thread and its worker sleeps.

``OPENBLAS_NUM_THREADS=1`` in the environment before numpy is imported does the same; this does
it from inside the process, whatever started it (``make run``, ``runworker media``, a test).
"""

from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

# The setter's name in each OpenBLAS build numpy has shipped: numpy >= 2 links scipy-openblas
# (64-bit integers, prefixed symbols); older wheels and system builds export the plain name.
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (numpy loads one at import)."""
    import numpy  # noqa: F401 - make sure numpy's BLAS is loaded before looking for it

    maps = Path("/proc/self/maps")
    if not maps.exists():  # not Linux: nothing to find this way
        return []
    return sorted(set(re.findall(r"(/\S*openblas\S*\.so[^\s]*)", maps.read_text())))


def _function(lib: ctypes.CDLL, names: tuple[str, ...]) -> ctypes._CFuncPtr | None:
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def blas_threads() -> list[int]:
    """The thread count of each loaded OpenBLAS (for tests and diagnostics)."""
    counts = []
    for path in _loaded_openblas():
        getter = _function(ctypes.CDLL(path), _GETTERS)
        if getter is not None:
            getter.restype = ctypes.c_int
            counts.append(int(getter()))
    return counts


def limit_blas_threads(threads: int = 1) -> int:
    """Set every loaded OpenBLAS to ``threads`` threads; returns how many libraries were set."""
    done = 0
    for path in _loaded_openblas():
        try:
            setter = _function(ctypes.CDLL(path), _SETTERS)
        except OSError:
            continue
        if setter is None:
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = None
        setter(int(threads))
        done += 1
    if not done:
        log.debug("no OpenBLAS found to limit")
    return done


__all__ = ["blas_threads", "limit_blas_threads"]
