"""Smart Turn v3.2 (Daily, BSD-2): an end-of-turn classifier over the last ≤ 8 s of speech.

The model is a Whisper-tiny encoder with a one-logit "turn complete" head (int8 ONNX, 8.7 MB,
23 languages including Chinese). It reads Whisper log-mel features of exactly 8 s of 16 kHz
audio: the last 8 s of the turn, or the whole turn zero-padded *at the front* (the end of the
input is always "now"); the waveform is normalised to zero mean and unit variance (padding
included) before the features, which are 80 mel bins × 800 frames. That is how Pipecat's
``LocalSmartTurnAnalyzerV3`` feeds it (its ``_whisper_features`` mirrors transformers'
``WhisperFeatureExtractor(chunk_length=8)``); faster-whisper's ``FeatureExtractor`` computes the
same features (checked: max difference ~1e-5, identical probabilities), so nothing of Pipecat's
code is imported. Pipecat feeds it from 0.5 s before the speech started up to the moment it asks,
which is after its VAD's 0.2 s of silence: the pause is part of the input.

Where the file comes from: the ``pipecat-ai`` wheel, installed **without its dependencies**
(``pip install --no-deps pipecat-ai==1.14.0``) and read by path; ``pipecat`` is never imported
(its ``__init__`` needs loguru, and the rest pulls numba, openai, Pillow…). The other packages on
PyPI that offer Smart Turn (``smart-turn-livekit``, ``vision-agents-plugins-smart-turn``,
``vox-smart-turn``) ship only code that downloads the weights from a model hub at run time,
which we never do; the Pipecat wheel is the one that carries the file itself (12 MB wheel,
34 MB unpacked, no native code of its own).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np

from media_pipeline.turns.base import Verdict

RATE = 16000
WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * RATE
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
PACKAGE_DIR = ("audio", "turn", "smart_turn", "data")
INSTALL_HINT = "pip install --no-deps pipecat-ai==1.14.0"


class SmartTurnMissing(RuntimeError):
    """The model file is not installed (the ``pipecat-ai`` wheel is absent or has moved it)."""


def model_path() -> Path | None:
    """Where the installed ``pipecat-ai`` wheel keeps the model, without importing ``pipecat``."""
    spec = importlib.util.find_spec("pipecat")  # a top-level package: finding it runs no code
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*PACKAGE_DIR, MODEL_FILE)
        if path.is_file():
            return path
    return None


def prepare(audio: np.ndarray) -> np.ndarray:
    """The model's 8 s input: keep the end, zero-pad the front, normalise (as the model was trained)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-WINDOW_SAMPLES:]
    if x.size < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.size, dtype=np.float32), x])
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


class SmartTurnDetector:
    """One onnxruntime session for the process; ``predict`` is safe from any number of threads.

    One intra-op and one inter-op thread with spinning off: the detector runs on the executors
    that also score VAD and decode chunks, on two cores shared by every call, and onnxruntime's
    default spinning pools burn a core between many small jobs (field notes, "Where a call's CPU
    goes").
    """

    name = "smart_turn"
    needs_audio = True

    def __init__(self, path: str | Path | None = None, *, threshold: float = 0.5) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        found = Path(path) if path else model_path()
        if found is None or not found.is_file():
            raise SmartTurnMissing(
                f"the Smart Turn model ({MODEL_FILE}) is not installed: `{INSTALL_HINT}` "
                "(or set TURN_DETECTOR=silence)"
            )
        self.path = found
        self.threshold = threshold
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(found), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        # FeatureExtractor keeps its window length as state; one per thread keeps it untouched.
        self._features = threading.local()
        self._feature_extractor = FeatureExtractor

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``(80, 800)`` log-mel features of the last 8 s of ``audio``."""
        extractor = getattr(self._features, "extractor", None)
        if extractor is None:
            extractor = self._feature_extractor(feature_size=80, sampling_rate=RATE, chunk_length=WINDOW_SECONDS)
            self._features.extractor = extractor
        return extractor(prepare(audio), padding=0)

    def probability(self, audio: np.ndarray) -> float:
        """P(the turn is complete) for the turn ending at the end of ``audio``."""
        feats = self.features(audio)[np.newaxis].astype(np.float32)
        out = self.session.run(None, {self.input_name: feats})[0]
        return float(np.asarray(out).reshape(-1)[0])

    def predict(self, audio: np.ndarray, *, text: str = "", language: str = "en") -> Verdict:
        started = time.perf_counter()
        p = self.probability(audio)
        ms = (time.perf_counter() - started) * 1000
        return Verdict(complete=p >= self.threshold, probability=p, inference_ms=ms, detector=self.name)
