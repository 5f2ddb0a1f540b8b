"""Test speech made at test time with eSpeak NG (no audio files in the repo). Plain functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from media_pipeline import audio
from media_pipeline.engines.tts.espeak import EspeakTTSEngine

_engine: EspeakTTSEngine | None = None


def _tts() -> EspeakTTSEngine:
    global _engine
    if _engine is None:
        _engine = EspeakTTSEngine()
    return _engine


def speak(
    text: str, *, language: str = "en", rate: int = 16000, voice: str = "", speed: float = 1.0
) -> np.ndarray:
    """``text`` spoken by eSpeak NG as float32 mono at ``rate``."""
    engine = _tts()
    chunks = list(engine.synthesize(text, voice=voice, language=language, speed=speed))
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return audio.resample(pcm, engine.sample_rate, rate)


def speak_pcm16(
    text: str, *, language: str = "en", rate: int = 16000, voice: str = "", speed: float = 1.0
) -> np.ndarray:
    """Like :func:`speak` but int16, as a codec or a WAV would carry it."""
    return audio.float32_to_pcm16(speak(text, language=language, rate=rate, voice=voice, speed=speed))


def silence(ms: int, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(rate * ms / 1000), dtype=np.float32)


def noise(ms: int, rate: int = 16000, *, level_dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """White noise at a given RMS level: a quiet room, not speech."""
    amplitude = 10 ** (level_dbfs / 20)
    return (np.random.default_rng(seed).standard_normal(int(rate * ms / 1000)) * amplitude).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 16000) -> Path:
    return audio.write_wav(path, samples, rate)


def frames(samples: np.ndarray, rate: int = 16000, ms: int = 20) -> list[np.ndarray]:
    """Cut a buffer into ``ms`` frames as a live stream would deliver it (last one may be short)."""
    step = int(rate * ms / 1000)
    return [samples[i : i + step] for i in range(0, len(samples), step)]
