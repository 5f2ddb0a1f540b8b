"""DashScope Paraformer real-time recognition (zh, en) over DashScope's WebSocket task protocol.

Per utterance: ``run-task`` (model, ``format: pcm``, ``sample_rate: 16000``, ``language_hints``),
wait for ``task-started``, send the utterance as 100 ms binary PCM16 frames, ``finish-task``,
then collect ``result-generated`` events until ``task-finished``. A result whose
``payload.output.sentence.sentence_end`` is true is final; intermediate ones and heartbeats
are skipped (the pipeline makes its own interims). The utterance is already complete when it
gets here, so frames go out back to back rather than paced at real time: pacing would add the
utterance's own length to every turn.
"""

from __future__ import annotations

import numpy as np

from lingecho.resilience.redaction import register_secret
from media_pipeline.audio import float32_to_pcm16
from media_pipeline.engines.asr.base import (
    MIN_AUDIO_S,
    SAMPLE_RATE,
    ASREngine,
    ASRError,
    Transcript,
    check_audio,
    whisper_language,
)
from media_pipeline.engines.dashscope import DashScopeTask, settings_value

FRAME_SAMPLES = SAMPLE_RATE // 10  # 100 ms, the documented frame size
LANGUAGES = ("zh", "en", "ja", "ko", "yue", "de", "fr", "ru")  # paraformer-realtime-v2's language hints


class DashScopeParaformerASR(ASREngine):
    name = "dashscope_paraformer"

    def __init__(self, *, url: str | None = None, api_key: str | None = None, model: str | None = None,
                 timeout: float | None = None, disfluency_removal: bool = False) -> None:
        self.url = url or settings_value("DASHSCOPE_WS_URL", "wss://dashscope.aliyuncs.com/api-ws/v1/inference/")
        self._api_key = api_key if api_key is not None else settings_value("DASHSCOPE_API_KEY", "")
        register_secret(self._api_key)
        self.model = model or settings_value("DASHSCOPE_ASR_MODEL", "paraformer-realtime-v2")
        self.timeout = timeout if timeout is not None else settings_value("ENGINE_TIMEOUT_SECONDS", 10.0)
        self.disfluency_removal = disfluency_removal

    def __repr__(self) -> str:
        return f"DashScopeParaformerASR(url={self.url!r}, model={self.model!r})"

    def supports_language(self, language: str) -> bool:
        return whisper_language(language) in LANGUAGES

    def transcribe(self, audio: np.ndarray, *, language: str, word_timestamps: bool = False,
                   beam_size: int = 1) -> Transcript:
        audio = check_audio(audio)
        lang = whisper_language(language)
        duration = audio.size / SAMPLE_RATE
        if duration < MIN_AUDIO_S or not np.any(audio):
            return Transcript(text="", confidence=0.0, language=lang, duration_s=duration)
        pcm = float32_to_pcm16(audio).astype("<i2").tobytes()
        sentences: list[str] = []
        with DashScopeTask(url=self.url, api_key=self._api_key, timeout=self.timeout, error_cls=ASRError) as task:
            task.run_task({
                "task_group": "audio",
                "task": "asr",
                "function": "recognition",
                "model": self.model,
                "parameters": {
                    "format": "pcm",
                    "sample_rate": SAMPLE_RATE,
                    "disfluency_removal_enabled": self.disfluency_removal,
                    "language_hints": [lang],
                },
                "input": {},
            })
            task.wait_started()
            step = FRAME_SAMPLES * 2
            for start in range(0, len(pcm), step):
                task.send_audio(pcm[start:start + step])
            task.finish_task()
            while True:
                event = task.receive()
                if isinstance(event, bytes):
                    continue
                kind = event["header"]["event"]
                if kind == "task-finished":
                    break
                if kind != "result-generated":
                    continue
                sentence = (event.get("payload") or {}).get("output", {}).get("sentence") or {}
                if sentence.get("heartbeat") or not sentence.get("sentence_end"):
                    continue
                text = str(sentence.get("text") or "").strip()
                if text:
                    sentences.append(text)
        joiner = "" if lang in ("zh", "yue", "ja") else " "
        text = joiner.join(sentences)
        # Paraformer reports no confidence; a final sentence is the service's best answer.
        return Transcript(text=text, confidence=1.0 if text else 0.0, language=lang, duration_s=duration)
