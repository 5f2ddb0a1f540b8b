"""OpenAI-compatible speech: ``POST {base}/audio/speech`` streamed back as PCM16.

``response_format`` "pcm" is OpenAI's raw 24 kHz 16-bit little-endian mono, yielded as it
arrives; "wav" is parsed from the stream (servers that only speak WAV, e.g. many local
ones) and resampled to :attr:`sample_rate` if its header says otherwise. ``speed`` is passed
through (OpenAI accepts 0.25-4.0); the API has no pitch control, so ``pitch`` is ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import numpy as np

from lingecho.resilience.errors import api_error_message, mark, retryable_status
from lingecho.resilience.redaction import register_secret
from media_pipeline.engines.asr.openai_compat import _settings
from media_pipeline.engines.tts.base import TTSEngine, TTSError, check_prosody
from media_pipeline.engines.tts.voices import is_provider_voice

READ_BYTES = 4800  # 100 ms at 24 kHz: small enough that the first audio leaves early


class OpenAICompatTTS(TTSEngine):
    name = "openai"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 voice: str | None = None, response_format: str = "pcm", sample_rate: int = 24000,
                 timeout: float | None = None) -> None:
        if response_format not in ("pcm", "wav"):
            raise ValueError(f"response_format must be 'pcm' or 'wav', got {response_format!r}")
        self.base_url = (base_url or _settings("OPENAI_BASE_URL", "https://api.openai.com/v1")).rstrip("/")
        self._api_key = api_key if api_key is not None else _settings("OPENAI_API_KEY", "")
        register_secret(self._api_key)
        self.model = model or _settings("OPENAI_TTS_MODEL", "tts-1")
        self.voice = voice or _settings("OPENAI_TTS_VOICE", "alloy")
        self.response_format = response_format
        self._rate = sample_rate
        self.timeout = timeout if timeout is not None else _settings("ENGINE_TIMEOUT_SECONDS", 10.0)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(headers=headers, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"OpenAICompatTTS(base_url={self.base_url!r}, model={self.model!r}, voice={self.voice!r})"

    @property
    def sample_rate(self) -> int:
        return self._rate

    def close(self) -> None:
        self._client.close()

    def synthesize(self, text: str, *, voice: str = "", language: str = "en", speed: float = 1.0,
                   pitch: float = 1.0) -> Iterator[np.ndarray]:
        check_prosody(speed, pitch)
        if not text.strip():
            return
        body = {
            "model": self.model,
            "input": text,
            "voice": voice if is_provider_voice(voice) else self.voice,
            "response_format": self.response_format,
            "speed": float(min(4.0, max(0.25, speed))),
        }
        try:
            with self._client.stream("POST", f"{self.base_url}/audio/speech", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise mark(TTSError(f"HTTP {response.status_code}: {api_error_message(response)}"),
                               retryable=retryable_status(response.status_code), status=response.status_code)
                chunks = response.iter_bytes(READ_BYTES)
                if self.response_format == "wav":
                    yield from self._wav(chunks)
                else:
                    yield from _pcm16(chunks)
        except httpx.TimeoutException as exc:
            raise mark(TTSError(f"no audio within {self.timeout:g}s"), retryable=True, timeout=True) from exc
        except httpx.TransportError as exc:
            raise mark(TTSError(f"speech server connection failed: {type(exc).__name__}"), retryable=True) from exc

    def _wav(self, chunks: Iterator[bytes]) -> Iterator[np.ndarray]:
        """Skip the RIFF header (whatever chunks it has) and stream the ``data`` chunk."""
        buf = b""
        rate = None
        chunks = iter(chunks)
        for chunk in chunks:
            buf += chunk
            rate, offset = _wav_header(buf)
            if offset is not None:
                buf = buf[offset:]
                break
        if rate is None:
            raise mark(TTSError("malformed WAV from the speech server"), retryable=False)

        def rest() -> Iterator[bytes]:
            if buf:
                yield buf
            yield from chunks

        if rate == self._rate:
            yield from _pcm16(rest())
            return
        from media_pipeline.audio import resampled_pcm16

        yield from resampled_pcm16(_pcm16(rest()), rate, self._rate)


def _pcm16(chunks: Iterator[bytes]) -> Iterator[np.ndarray]:
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = len(data) - (len(data) % 2)
        carry = data[cut:]
        if cut:
            yield np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)


def _wav_header(buf: bytes) -> tuple[int | None, int | None]:
    """(sample rate, offset of the PCM data) once both are in ``buf``; (rate|None, None) before."""
    if len(buf) < 12:
        return None, None
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise mark(TTSError("speech server did not send a WAV"), retryable=False)
    pos, rate = 12, None
    while pos + 8 <= len(buf):
        cid, size = buf[pos:pos + 4], struct.unpack("<I", buf[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            if pos + 8 + 16 > len(buf):
                return rate, None
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", buf[pos + 8:pos + 24])
            if fmt != 1 or channels != 1 or bits != 16:
                raise mark(TTSError(f"unsupported WAV from the speech server ({channels} ch, {bits}-bit)"),
                           retryable=False)
        elif cid == b"data":
            return rate, pos + 8
        pos += 8 + size + (size % 2)
    return rate, None
