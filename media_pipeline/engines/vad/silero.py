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
# Deferred scoring of a quiet line between turns. Silero's LSTM remembers a long silence for seconds
# (its state after 4 s of digital silence still differs from the state after 2 s by enough to move
# the next onset across the threshold), so quiet windows cannot simply be skipped. Instead, while no
# segment is open and the stream is already quiet (last score under QUIET_PROB), windows whose
# loudest sample is under GATE_PEAK are scored 0 at once and kept; the next model run scores them
# first, in the same batch (the batch axis is time), so the state and every later score are exactly
# what they would have been. Silero finds speech down to about -55 dBFS peak (eSpeak at -55: 0.97;
# at -60: 0.02 at most), so calling such a window "no speech" before the model has seen it decides
# nothing differently. At most MAX_DEFERRED windows wait: an idle line costs one model run a second
# instead of thirty-one.
GATE_PEAK = 10 ** (-62 / 20)
QUIET_PROB = 0.1
MAX_DEFERRED = 31


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
        self._deferred: list[np.ndarray] = []  # whole windows scored 0 and not yet run (GATE_PEAK)
        self._deferred_n = 0
        self._deferred_context = self._context
        self.defer_ok = False  # set by the caller that knows no segment is open (SpeechDetector)
        self.samples_scored = 0
        self.windows_deferred = 0  # windows ever scored 0 ahead of the model
        self.deferred_voiced = 0  # of those, windows the model later scored as voice (should stay 0)

    def defers(self, samples: np.ndarray) -> bool:
        """Feeding ``samples`` now would run no model (deferred scoring, see GATE_PEAK). Cheap enough
        for an event loop; ``defer_ok`` must already say whether deferring is allowed."""
        samples = np.asarray(samples)
        return self._may_defer((self._pending.size + samples.size) // WINDOW, self._pending, samples)

    def _may_defer(self, windows: int, *audio: np.ndarray) -> bool:
        """``windows`` more windows, made of ``audio``, may be scored 0 ahead of the model (the level
        is measured last: the flags and the count usually decide first, for free)."""
        if not (self.defer_ok and self._quiet and self._deferred_n + windows <= MAX_DEFERRED):
            return False
        return all(float(np.max(np.abs(part), initial=0.0)) < GATE_PEAK for part in audio)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono audio (float32 or int16) of any length; score completed windows.

        Returns one probability per completed 512-sample window (possibly none). Window ``k`` of
        the stream covers samples ``[k * 512, (k + 1) * 512)``. With ``defer_ok``, quiet windows
        may come back as 0 before the model has run on them (see GATE_PEAK).
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
        whole = buf[: n * WINDOW]
        self.samples_scored += n * WINDOW
        if self._may_defer(n, whole):
            if not self._deferred:
                self._deferred_context = self._context
            self._deferred.append(whole.copy())
            self._deferred_n += n
            self.windows_deferred += n
            self._context = whole[-CONTEXT:].copy()
            return np.zeros(n, dtype=np.float32)
        first_context = self._context
        if self._deferred:
            first_context = self._deferred_context
            whole = np.concatenate([*self._deferred, whole])
        windows = whole.reshape(-1, WINDOW)
        contexts = np.empty((len(windows), CONTEXT), dtype=np.float32)
        contexts[0] = first_context
        contexts[1:] = windows[:-1, -CONTEXT:]
        batch = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1), dtype=np.float32)
        probs, self._h, self._c = self.model.score(batch, self._h, self._c)
        if self._deferred:
            self.deferred_voiced += int((probs[: self._deferred_n] >= 0.5).sum())
            probs = probs[self._deferred_n:]
            self._deferred, self._deferred_n = [], 0
        self._quiet = bool(probs[-1] < QUIET_PROB)
        self._context = windows[-1, -CONTEXT:].copy()
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
