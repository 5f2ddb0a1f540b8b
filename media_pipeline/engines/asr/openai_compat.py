"""OpenAI-compatible transcription: ``POST {base}/audio/transcriptions`` with the utterance as WAV.

Works with OpenAI (whisper-1, gpt-4o-transcribe), and any server that copies the endpoint
(vLLM, LocalAI, faster-whisper-server, DashScope compatible mode where offered). One request per
utterance; the request is multipart (``file``, ``model``, ``language``, ``response_format``).
Confidence comes from ``verbose_json`` segments when the server returns them, else it is 1.0:
the plain ``json`` format reports none.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import numpy as np

from lingecho.resilience.errors import api_error_message, mark, retryable_status
from lingecho.resilience.redaction import register_secret
from media_pipeline.audio import wav_bytes
from media_pipeline.engines.asr.base import (
    MIN_AUDIO_S,
    SAMPLE_RATE,
    ASREngine,
    ASRError,
    Transcript,
    check_audio,
    whisper_language,
)
from media_pipeline.engines.asr.faster_whisper import segment_confidence

log = logging.getLogger(__name__)


def _settings(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


class OpenAICompatASR(ASREngine):
    name = "openai"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 timeout: float | None = None, response_format: str = "json") -> None:
        self.base_url = (base_url or _settings("OPENAI_BASE_URL", "https://api.openai.com/v1")).rstrip("/")
        self._api_key = api_key if api_key is not None else _settings("OPENAI_API_KEY", "")
        register_secret(self._api_key)
        self.model = model or _settings("OPENAI_ASR_MODEL", "whisper-1")
        self.timeout = timeout if timeout is not None else _settings("ENGINE_TIMEOUT_SECONDS", 10.0)
        self.response_format = response_format
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        # One client per engine: keeps the TLS connection warm between turns; httpx.Client is thread-safe.
        self._client = httpx.Client(headers=headers, timeout=self.timeout)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatASR(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def transcribe(self, audio: np.ndarray, *, language: str, word_timestamps: bool = False,
                   beam_size: int = 1) -> Transcript:
        audio = check_audio(audio)
        lang = whisper_language(language)
        duration = audio.size / SAMPLE_RATE
        if duration < MIN_AUDIO_S or not np.any(audio):
            return Transcript(text="", confidence=0.0, language=lang, duration_s=duration)
        data = {"model": self.model, "language": lang, "response_format": self.response_format}
        files = {"file": ("utterance.wav", wav_bytes(audio, SAMPLE_RATE), "audio/wav")}
        try:
            response = self._client.post(f"{self.base_url}/audio/transcriptions", data=data, files=files)
        except httpx.TimeoutException as exc:
            raise mark(ASRError(f"no answer within {self.timeout:g}s"), retryable=True, timeout=True) from exc
        except httpx.TransportError as exc:
            raise mark(ASRError(f"cannot reach the transcription server: {type(exc).__name__}"),
                       retryable=True) from exc
        if response.status_code != 200:
            raise mark(ASRError(f"HTTP {response.status_code}: {api_error_message(response)}"),
                       retryable=retryable_status(response.status_code), status=response.status_code)
        return self._parse(response, lang, duration)

    def _parse(self, response: httpx.Response, lang: str, duration: float) -> Transcript:
        if self.response_format == "text":
            return Transcript(text=response.text.strip(), confidence=1.0, language=lang, duration_s=duration)
        try:
            body = response.json()
            text = str(body["text"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise mark(ASRError("malformed transcription response"), retryable=False) from exc
        confidence = 1.0
        segments = body.get("segments") or []
        if segments:
            scores = [
                segment_confidence(float(s.get("avg_logprob", 0.0)), float(s.get("no_speech_prob", 0.0)))
                for s in segments
            ]
            confidence = sum(scores) / len(scores)
        # verbose_json names the language ("english"); keep the code we asked for.
        return Transcript(text=text, confidence=confidence, language=lang, duration_s=duration)
