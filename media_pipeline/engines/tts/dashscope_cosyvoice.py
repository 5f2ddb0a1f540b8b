"""DashScope CosyVoice speech synthesis over DashScope's WebSocket task protocol.

Per call: ``run-task`` (model, voice, ``format: pcm``, sample rate, rate/pitch), wait for
``task-started``, one ``continue-task`` with the text, ``finish-task``; then binary frames
are raw PCM16 audio (yielded as they arrive) and ``result-generated`` events are sentence
metadata, until ``task-finished``. The default rate is 22050 Hz, eSpeak's, so falling back
mid-call needs no resampling.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lingecho.resilience.redaction import register_secret
from media_pipeline.engines.dashscope import DashScopeTask, settings_value
from media_pipeline.engines.tts.base import TTSEngine, TTSError, check_prosody
from media_pipeline.engines.tts.voices import is_provider_voice

RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # what the service accepts


class DashScopeCosyVoiceTTS(TTSEngine):
    name = "dashscope_cosyvoice"

    def __init__(self, *, url: str | None = None, api_key: str | None = None, model: str | None = None,
                 voice: str | None = None, sample_rate: int = 22050, timeout: float | None = None) -> None:
        if sample_rate not in RATES:
            raise ValueError(f"CosyVoice sample rate must be one of {RATES}, got {sample_rate}")
        self.url = url or settings_value("DASHSCOPE_WS_URL", "wss://dashscope.aliyuncs.com/api-ws/v1/inference/")
        self._api_key = api_key if api_key is not None else settings_value("DASHSCOPE_API_KEY", "")
        register_secret(self._api_key)
        self.model = model or settings_value("DASHSCOPE_TTS_MODEL", "cosyvoice-v1")
        self.voice = voice or settings_value("DASHSCOPE_TTS_VOICE", "longxiaochun")
        self._rate = sample_rate
        self.timeout = timeout if timeout is not None else settings_value("ENGINE_TIMEOUT_SECONDS", 10.0)

    def __repr__(self) -> str:
        return f"DashScopeCosyVoiceTTS(url={self.url!r}, model={self.model!r}, voice={self.voice!r})"

    @property
    def sample_rate(self) -> int:
        return self._rate

    def synthesize(self, text: str, *, voice: str = "", language: str = "en", speed: float = 1.0,
                   pitch: float = 1.0) -> Iterator[np.ndarray]:
        check_prosody(speed, pitch)
        if not text.strip():
            return
        task = DashScopeTask(url=self.url, api_key=self._api_key, timeout=self.timeout, error_cls=TTSError)
        try:  # closed in finally: a caller that stops iterating (barge-in) must not leak the socket
            task.open()
            task.run_task({
                "task_group": "audio",
                "task": "tts",
                "function": "SpeechSynthesizer",
                "model": self.model,
                "parameters": {
                    "text_type": "PlainText",
                    "voice": voice if is_provider_voice(voice) else self.voice,
                    "format": "pcm",
                    "sample_rate": self._rate,
                    "volume": 50,
                    "rate": float(min(2.0, max(0.5, speed))),
                    "pitch": float(min(2.0, max(0.5, pitch))),
                },
                "input": {},
            })
            task.wait_started()
            task.continue_task({"text": text})
            task.finish_task()
            carry = b""  # a frame may split a sample; keep the odd byte for the next one
            while True:
                frame = task.receive()
                if isinstance(frame, bytes):
                    data = carry + frame
                    cut = len(data) - (len(data) % 2)
                    carry = data[cut:]
                    if cut:
                        yield np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
                elif frame["header"]["event"] == "task-finished":
                    return
        finally:
            task.close()
