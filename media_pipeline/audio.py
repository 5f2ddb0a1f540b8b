"""Small audio helpers shared by every stage: sample formats, mono, resampling, level, WAV.

Conventions: "float" audio is ``float32`` in [-1, 1]; "pcm16" is ``int16``. Mono arrays are 1-D.
Multi-channel arrays are either planar ``(channels, n)`` (what PyAV gives) or interleaved 1-D
with ``channels`` passed explicitly.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

from roleplay.audio_format import SAMPLE_RATE as ASR_RATE

_PCM16_SCALE = 32768.0
DBFS_FLOOR = -120.0


# --------------------------------------------------------------------------------------------
# sample formats
# --------------------------------------------------------------------------------------------

def pcm16_to_float32(pcm: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
    """int16 samples (array or little-endian bytes) -> float32 in [-1, 1)."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        pcm = np.frombuffer(pcm, dtype="<i2")
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / _PCM16_SCALE


def float32_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 -> int16, clipping instead of wrapping (a wrapped peak is a loud click)."""
    scaled = np.asarray(samples, dtype=np.float32) * _PCM16_SCALE
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def as_float32(samples: np.ndarray) -> np.ndarray:
    """Accept int16 or float audio and return float32, converting the scale only for integers."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return pcm16_to_float32(samples)
    return samples.astype(np.float32, copy=False)


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    """Accept int16 or float audio and return int16, converting (and clipping) only floats."""
    samples = np.asarray(samples)
    return samples if samples.dtype == np.int16 else float32_to_pcm16(samples)


def downmix(samples: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Average channels into mono.

    A 2-D array is taken as planar ``(channels, n)``; a 1-D array is interleaved when
    ``channels`` > 1 (aiortc's packed s16 stereo frames come out as ``(1, n * channels)``,
    so pass ``channels`` for those too). The result keeps float32, or int16 for int16 input.
    """
    samples = np.asarray(samples)
    dtype = samples.dtype
    if samples.ndim == 2 and samples.shape[0] == 1 and channels and channels > 1:
        samples = samples[0]
    if samples.ndim == 1:
        if not channels or channels == 1:
            return samples
        samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).T
    if samples.shape[0] == 1:
        return samples[0]
    mixed = samples.astype(np.float32).mean(axis=0)
    if dtype == np.int16:
        return np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
    return mixed.astype(np.float32)


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------

class Resampler:
    """Stateful mono float32 resampler for a stream of small frames (e.g. 20 ms).

    Wraps libswresample through PyAV so the filter history carries across frames: resampling
    each 20 ms frame on its own would put a discontinuity at every frame edge. The output of
    one call may be a few samples shorter or longer than ``len(x) * out/in`` (the filter
    delay); over a whole stream, including :meth:`flush`, the totals match. One instance per
    stream and direction; not thread-safe.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._swr: av.AudioResampler | None = None
        if self.in_rate != self.out_rate:
            self._swr = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of the stream (int16 or float32 mono) -> float32."""
        samples = np.ascontiguousarray(as_float32(samples).reshape(-1))
        if self._swr is None:
            return samples
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        return self._collect(self._swr.resample(frame))

    def flush(self) -> np.ndarray:
        """Return the samples still inside the filter at the end of the stream."""
        if self._swr is None:
            return np.zeros(0, dtype=np.float32)
        out = self._collect(self._swr.resample(None))
        # libswresample cannot be reused after a flush: start a fresh one for a new stream.
        self._swr = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        return out

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


class FrameConverter:
    """Decoded frames of any layout, format and rate (a stream of them) → float32 mono at ``rate``.

    One libswresample call per frame does the downmix, the format conversion and the resampling
    (WebRTC's Opus arrives as 48 kHz packed s16 stereo, 50 frames a second per call): 42 µs a
    frame here against 126 µs for ``to_ndarray`` + :func:`downmix` + :class:`Resampler`. It
    converts to s16, whose downmix matrix is normalised to (L + R) / 2 as :func:`downmix` does;
    to float it would be (L + R) / √2, 3 dB louder. The filter history carries across frames; a
    frame whose layout, format or rate differs from the last starts a new filter.
    """

    def __init__(self, rate: int) -> None:
        self.rate = int(rate)
        self._swr: av.AudioResampler | None = None
        self._shape: tuple[str, str, int] | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape != self._shape:
            self._swr = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._shape = shape
        frame.pts = None  # a gap in the sender's timestamps is not a reason to insert silence
        out = self._swr.resample(frame)
        if not out:
            return np.zeros(0, dtype=np.float32)
        pcm = out[0].to_ndarray() if len(out) == 1 else np.concatenate([f.to_ndarray() for f in out], axis=1)
        return pcm16_to_float32(pcm.reshape(-1))


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot resample of a whole mono buffer (int16 or float32) -> float32."""
    if in_rate == out_rate:
        return as_float32(samples).reshape(-1)
    resampler = Resampler(in_rate, out_rate)
    head = resampler.process(samples)
    return np.concatenate([head, resampler.flush()])


def to_asr_input(samples: np.ndarray, rate: int, channels: int | None = None) -> np.ndarray:
    """Any buffer -> float32 mono 16 kHz, what VAD and ASR take."""
    return resample(downmix(as_float32(samples), channels), rate, ASR_RATE)


# --------------------------------------------------------------------------------------------
# level
# --------------------------------------------------------------------------------------------

def rms(samples: np.ndarray) -> float:
    """Root mean square of float32 (or int16, scaled to float) audio; 0.0 for an empty buffer."""
    x = as_float32(samples)
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale, floored at ``DBFS_FLOOR`` so it is always finite."""
    level = rms(samples)
    if level <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * float(np.log10(level)))


# --------------------------------------------------------------------------------------------
# WAV
# --------------------------------------------------------------------------------------------

def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """Encode int16 or float32 audio as a 16-bit PCM WAV file in memory.

    Multi-channel input is planar ``(channels, n)`` or interleaved 1-D.
    """
    samples = np.asarray(samples)
    if samples.ndim == 2:
        channels = samples.shape[0]
        samples = samples.T.reshape(-1)
    pcm = as_pcm16(samples)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """Write a 16-bit PCM WAV file and return its path."""
    path = Path(path)
    path.write_bytes(wav_bytes(samples, rate, channels))
    return path


def read_wav(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV (path or bytes) -> (float32 mono samples, sample rate).

    Stereo is downmixed; other sample widths are refused, since only 16-bit is written here.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"only 16-bit PCM WAV is supported, got {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm16_to_float32(downmix(pcm, channels)), rate


def resampled_pcm16(chunks: Iterable[np.ndarray], in_rate: int, out_rate: int) -> Iterator[bytes]:
    """A stream of mono chunks (int16 or float32) at ``in_rate`` as PCM16 bytes at ``out_rate``,
    resampled statefully across chunk edges and flushed at the end (one TTS reply at a time)."""
    resampler = Resampler(in_rate, out_rate)
    for chunk in chunks:
        out = resampler.process(chunk)
        if out.size:
            yield float32_to_pcm16(out)
    tail = resampler.flush()
    if tail.size:
        yield float32_to_pcm16(tail)
