"""Whole-call re-transcription after the call, offline, with word timestamps.

This implements the after-call job's port (:mod:`roleplay.transcription`); ``MediaPipelineConfig.ready``
registers :class:`FasterWhisperRetranscriber` in every process.

The live transcript is decoded utterance by utterance under a latency budget; afterwards there is
time to decode the whole recording again, with a larger model if one is configured
(``ARCHIVE_ASR_MODEL_PATH``, else ``ASR_MODEL_PATH``, else the bundled tiny.en). Each channel of the
stereo recording (left: trainee, right: buyer — see ``media_pipeline.recording``) is transcribed on
its own, so every word keeps its speaker without any diarisation.

faster-whisper's own VAD filter is used instead of our endpointer: it drops the long silences of
the other side's turns, packs the remaining speech into 30 s windows (few decodes, which is what
costs time) and maps the timestamps back onto the recording's timeline.
"""

from __future__ import annotations

import time
from typing import IO, Any

import numpy as np

from media_pipeline.engines.asr.base import whisper_language
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.transcription import RecordingUnreadable, RetranscribeOptions

CHANNELS = ("trainee", "buyer")  # column order of the stereo recording


def load_stereo(source: str | IO[bytes]) -> np.ndarray:
    """Decode a stored recording (the raw WAV, or the archived WebM/Opus) to int16 ``(n, 2)`` at 16 kHz.

    PyAV reads both formats, so re-processing still works after the raw WAV was replaced by the
    compact archive copy. A mono file is duplicated onto both columns.
    """
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.audio:
                raise RecordingUnreadable("recording has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, 2))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, 2))
    except av.error.FFmpegError as exc:
        raise RecordingUnreadable(f"cannot decode recording: {exc}") from exc
    if not chunks:
        return np.zeros((0, 2), dtype=np.int16)
    return np.concatenate(chunks).astype(np.int16, copy=False)


def _engine(options: RetranscribeOptions) -> Any:
    from media_pipeline.engines.asr.faster_whisper import FasterWhisperEngine

    return FasterWhisperEngine(options.model_path or None, cpu_threads=options.cpu_threads, instance="archive")


def _channel_segments(model: Any, audio: np.ndarray, speaker: str, *, language: str, beam_size: int) -> list[dict]:
    segments, _info = model.transcribe(
        audio,
        language=language,
        beam_size=beam_size,
        best_of=1,
        temperature=[0.0],
        condition_on_previous_text=False,
        word_timestamps=True,
        vad_filter=True,
        vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 200},
    )
    out: list[dict] = []
    for seg in segments:  # a generator: decoding happens while iterating
        text = seg.text.strip()
        if not text:
            continue
        words = [
            {
                "word": w.word.strip(),
                "start_ms": round(w.start * 1000),
                "end_ms": round(w.end * 1000),
                "probability": round(float(w.probability), 3),
            }
            for w in (seg.words or [])
            if w.word.strip()
        ]
        out.append({
            "speaker": speaker,
            "start_ms": round(seg.start * 1000),
            "end_ms": round(seg.end * 1000),
            "text": text,
            "avg_logprob": round(float(seg.avg_logprob), 3),
            "no_speech_prob": round(float(seg.no_speech_prob), 3),
            "words": words,
        })
    return out


def retranscribe(stereo: np.ndarray, options: RetranscribeOptions) -> dict[str, object]:
    """Transcribe both channels of a 16 kHz int16 ``(n, 2)`` recording; a JSON-serialisable result.

    Shape: ``{status, engine, model, language, duration_ms, elapsed_s, segments: [{speaker, start_ms,
    end_ms, text, words: [{word, start_ms, end_ms, probability}], ...}], text: {trainee, buyer}}``,
    segments in time order on the recording's timeline. ``status`` is ``"skipped"`` (with ``reason``)
    when the model cannot handle the scenario's language — not an error: the live transcript stands.
    """
    started = time.perf_counter()
    engine = _engine(options)
    language = whisper_language(options.language)
    result: dict[str, object] = {
        "engine": "faster_whisper",
        "model": f"{engine.model_path.parent.name}/{engine.model_path.name}",
        "language": language,
        "duration_ms": round(len(stereo) * 1000 / RATE),
        "channels": list(CHANNELS),
        "segments": [],
        "text": dict.fromkeys(CHANNELS, ""),
    }
    if not engine.supports_language(language):
        result.update(status="skipped", reason=f"model {engine.model_path.name} cannot transcribe {language!r}")
        return result
    segments: list[dict] = []
    for column, speaker in enumerate(CHANNELS):
        channel = np.ascontiguousarray(stereo[:, column], dtype=np.float32) / 32768.0 if len(stereo) else None
        if channel is None or not np.any(channel):
            continue  # a silent side (a typed call, a buyer with TTS off): nothing to decode
        segments.extend(
            _channel_segments(engine.model, channel, speaker, language=language, beam_size=options.beam_size)
        )
    segments.sort(key=lambda s: (s["start_ms"], s["end_ms"], s["speaker"]))
    result["segments"] = segments
    result["text"] = {sp: " ".join(s["text"] for s in segments if s["speaker"] == sp) for sp in CHANNELS}
    result["status"] = "done"
    result["elapsed_s"] = round(time.perf_counter() - started, 3)
    return result


class FasterWhisperRetranscriber:
    """:class:`roleplay.transcription.Retranscriber` with the offline faster-whisper model (loaded per job)."""

    def load_stereo(self, source: str | IO[bytes]) -> np.ndarray:
        return load_stereo(source)

    def retranscribe(self, stereo: np.ndarray, options: RetranscribeOptions) -> dict[str, object]:
        return retranscribe(stereo, options)
