"""Engine registry: a name -> "module:Class" table per engine kind, imported only when asked for.

A new provider is one file in the kind's folder plus one line here; nothing heavy (onnxruntime,
ctranslate2, HTTP clients) is imported until an engine of that name is requested.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_pipeline.engines.asr.base import ASREngine
    from media_pipeline.engines.tts.base import TTSEngine
    from media_pipeline.engines.vad.silero import SileroVADModel

ASR_ENGINES: dict[str, str] = {
    "faster_whisper": "media_pipeline.engines.asr.faster_whisper:FasterWhisperEngine",
    "openai": "media_pipeline.engines.asr.openai_compat:OpenAICompatASR",
    "dashscope_paraformer": "media_pipeline.engines.asr.dashscope_paraformer:DashScopeParaformerASR",
    "paraformer": "media_pipeline.engines.asr.dashscope_paraformer:DashScopeParaformerASR",
}
TTS_ENGINES: dict[str, str] = {
    "espeak": "media_pipeline.engines.tts.espeak:EspeakTTSEngine",
    "openai": "media_pipeline.engines.tts.openai_compat:OpenAICompatTTS",
    "dashscope_cosyvoice": "media_pipeline.engines.tts.dashscope_cosyvoice:DashScopeCosyVoiceTTS",
    "cosyvoice": "media_pipeline.engines.tts.dashscope_cosyvoice:DashScopeCosyVoiceTTS",
}


def _load(table: dict[str, str], kind: str, name: str) -> Any:
    try:
        target = table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} engine {name!r}; known: {', '.join(sorted(table))}") from None
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def get_asr_engine(name: str = "faster_whisper", **opts: Any) -> ASREngine:
    return _load(ASR_ENGINES, "ASR", name)(**opts)


def get_tts_engine(name: str = "espeak", **opts: Any) -> TTSEngine:
    return _load(TTS_ENGINES, "TTS", name)(**opts)


def get_vad_model() -> SileroVADModel:
    """The process-wide Silero model; create one ``SpeechDetector`` per stream on top of it."""
    from media_pipeline.engines.vad.silero import get_silero_model

    return get_silero_model()
