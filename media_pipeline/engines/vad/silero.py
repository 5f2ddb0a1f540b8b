"""Silero VAD (v6) run with onnxruntime from the ONNX file that faster-whisper ships.

The model takes a batch of windows shaped ``(n, 64 + 512)``: each 512-sample window at 16 kHz
is prefixed by the last 64 samples of the window before it, and the LSTM state ``h``/``c``
(``(1, 1, 128)`` each) runs through the batch in order, so a batch *is* a time sequence. A
stream therefore keeps three things between calls: ``h``, ``c`` and the 64-sample context,
plus the partial window not yet scored.
"""

from __future__ import annotations

import threading
from importlib.resources import files
from pathlib import Path

import numpy as np

from media_pipeline.audio import as_float32
from roleplay.audio_format import SAMPLE_RATE

WINDOW = 512
CONTEXT = 64
_STATE_SHAPE = (1, 1, 128)
# A window whose loudest sample is below this is not run through the model while the stream is
# already quiet (its last score under QUIET_PROB): it scores 0. Silero finds speech down to about
# -55 dBFS peak (eSpeak at -55: 0.97; at -60: 0.02 at most), so -62 dBFS loses nothing; a line
# that quiet is digital silence, a muted microphone or a noise suppressor's floor. Gated windows
# leave the LSTM state as the last quiet window left it, which is where silence holds it anyway.
GATE_PEAK = 10 ** (-62 / 20)
QUIET_PROB = 0.1


def default_model_path() -> Path:
    return Path(str(files("faster_whisper") / "assets" / "silero_vad_v6.onnx"))


class SileroVADModel:
    """One onnxruntime session for every stream in the process.

    ``InferenceSession.run`` is thread-safe, and one intra-op thread per call keeps a burst of
    concurrent calls from oversubscribing the two cores.
    """

    sample_rate = SAMPLE_RATE
    window_samples = WINDOW

    def __init__(self, path: str | Path | None = None, *, intra_op_threads: int = 1) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Many tiny runs (one 32 ms window per call per hop): a pool thread spinning between them
        # would take CPU from the event loops; with one intra-op thread there is no pool, and if
        # intra_op_threads is raised the pool must still sleep rather than spin.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.path = Path(path) if path else default_model_path()
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def create_stream(self) -> SileroVADStream:
        return SileroVADStream(self)

    def score(
        self, windows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score ``(n, CONTEXT + WINDOW)`` windows in order; returns (probs, h, c)."""
        probs, h, c = self.session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h, c


class SileroVADStream:
    """Streaming state for one audio stream. Not thread-safe: one caller at a time."""

    sample_rate = SAMPLE_RATE
    window_samples = WINDOW

    def __init__(self, model: SileroVADModel) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._quiet = True  # a fresh state is the state of silence
        self.samples_scored = 0
        self.windows_gated = 0  # windows scored 0 without the model (GATE_PEAK)

    def gates(self, samples: np.ndarray) -> bool:
        """Feeding ``samples`` now would run no model: the stream is quiet and they (with the partial
        window waiting) stay under ``GATE_PEAK``. Cheap enough for an event loop."""
        if not self._quiet:
            return False
        peak = float(np.max(np.abs(samples), initial=0.0))
        if self._pending.size:
            peak = max(peak, float(np.max(np.abs(self._pending))))
        return peak < GATE_PEAK

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono audio (float32 or int16) of any length; score completed windows.

        Returns one probability per completed 512-sample window (possibly none). Window ``k`` of
        the stream covers samples ``[k * 512, (k + 1) * 512)``.
        """
        x = as_float32(samples).reshape(-1)
        if x.size and not np.isfinite(x).all():
            # A NaN would poison the recurrent state for the rest of the call.
            raise ValueError("VAD input contains NaN or infinite samples")
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW:].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        gated = 0
        if self._quiet:
            loud = np.flatnonzero(np.abs(windows).max(axis=1) >= GATE_PEAK)
            gated = n if loud.size == 0 else int(loud[0])
        probs = np.zeros(n, dtype=np.float32)
        if gated < n:
            scored = windows[gated:]
            contexts = np.empty((n - gated, CONTEXT), dtype=np.float32)
            contexts[0] = windows[gated - 1, -CONTEXT:] if gated else self._context
            contexts[1:] = scored[:-1, -CONTEXT:]
            batch = np.ascontiguousarray(np.concatenate([contexts, scored], axis=1), dtype=np.float32)
            probs[gated:], self._h, self._c = self.model.score(batch, self._h, self._c)
        self._quiet = bool(probs[-1] < QUIET_PROB)
        self._context = windows[-1, -CONTEXT:].copy()
        self.samples_scored += n * WINDOW
        self.windows_gated += gated
        return probs


_model: SileroVADModel | None = None
_model_lock = threading.Lock()


def get_silero_model(path: str | Path | None = None) -> SileroVADModel:
    """The process-wide shared model (the bundled file), created on first use."""
    global _model
    if path is not None:
        return SileroVADModel(path)
    with _model_lock:
        if _model is None:
            _model = SileroVADModel()
        return _model
