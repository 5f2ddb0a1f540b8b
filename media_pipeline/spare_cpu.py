"""Whether the host has CPU to spare right now: the gate for work that only improves the picture.

Interim transcripts are that work: each is a whole ASR decode, and the turn never waits for one.
"No ASR decode running" (``Engines.asr_idle``) was the only gate, and it is not enough on a small
box: the ASR threads are one of several consumers of the cores (the event loop's RTP work, VAD,
Smart Turn, TTS, and whatever else runs on the machine). ``bench/capacity.py`` at 4 calls on a
2-core machine: the ASR pool was often idle while the machine was 140-155 % busy of 200 %, and the
interims started then slowed the finals behind them (turn p50 900-1,020 ms with interims, 687 ms
with none). So an interim after a turn's first also needs ``INTERIM_MIN_IDLE_CORES`` idle cores.

The reading is the whole machine's (``/proc/stat``): a process beside the server that takes the
cores counts as much as our own work. It is sampled at most every ``SAMPLE_S`` and judged over the
last ``WINDOW_S`` or so, so a burst is seen within half a second and a single busy instant does not
decide. Where ``/proc/stat`` does not exist (not Linux) the host always counts as spare, as before.
In a container ``/proc/stat`` is the host's: a CPU quota is not seen, so on a large idle host the
gate lets interims through as the ASR-pool gate alone did.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

SAMPLE_S = 0.25  # at most one read of /proc/stat per this long (~20 µs each)
WINDOW_S = 1.0  # idle is judged over about this much of the recent past
PROC_STAT = Path("/proc/stat")


def read_proc_stat(path: Path = PROC_STAT) -> tuple[float, float, int] | None:
    """(busy jiffies, total jiffies, cores) of the whole machine; None if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    fields = [float(value) for value in lines[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return total - idle, total, max(1, cores)


class SpareCPU:
    """Idle cores of the machine over the recent past, read lazily (used from one event loop)."""

    def __init__(self, min_idle_cores: float, *, reader: Callable[[], tuple[float, float, int] | None] = read_proc_stat,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_idle_cores = min_idle_cores
        self._reader = reader
        self._clock = clock
        self._samples: collections.deque[tuple[float, float, float, int]] = collections.deque(maxlen=16)

    def idle_cores(self) -> float | None:
        """Idle cores over the last ~``WINDOW_S``; None until two readings are far enough apart."""
        now = self._clock()
        if not self._samples or now - self._samples[-1][0] >= SAMPLE_S:
            reading = self._reader()
            if reading is None:
                return None
            self._samples.append((now, *reading))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()
        (_, busy0, total0, _), (_, busy1, total1, cores) = self._samples[0], self._samples[-1]
        if total1 <= total0:
            return None
        return cores * (1.0 - (busy1 - busy0) / (total1 - total0))

    def spare(self) -> bool:
        """True when at least ``min_idle_cores`` were idle lately (or nothing can be read, or no gate)."""
        if self.min_idle_cores <= 0:
            return True
        idle = self.idle_cores()
        return idle is None or idle >= self.min_idle_cores


_spare: SpareCPU | None = None


def spare_cpu() -> SpareCPU:
    """The process's gauge (``INTERIM_MIN_IDLE_CORES``), shared by every call on this loop."""
    global _spare
    if _spare is None:
        from django.conf import settings

        _spare = SpareCPU(settings.INTERIM_MIN_IDLE_CORES)
    return _spare
