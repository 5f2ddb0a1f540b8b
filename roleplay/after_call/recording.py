"""The call's audio in the after-call job: find it, load it, compress it, transcribe it again.

The raw stereo WAV (trainee left, buyer right) comes from ``media_pipeline.recording``; on a re-run
after the WAV was dropped, the archived Opus copy is the source. Decoding and re-transcription go
through the ``roleplay.transcription`` port, which the media pipeline implements, so the domain never
imports a speech engine.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

from roleplay.after_call.archive import archive_names
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.models import RealtimeSession
from roleplay.recording_segments import raw_recording_name
from roleplay.transcription import RecordingUnreadable, RetranscribeOptions, get_retranscriber


def recording_source(session: RealtimeSession) -> str | None:
    """The best stored recording: the raw WAV if it is still there, else the archived copy."""
    candidates = [session.recording.name if session.recording else "", raw_recording_name(session.pk),
                  archive_names(session.pk)["recording"]]
    for name in candidates:
        if name and default_storage.exists(name):
            return name
    return None


def load_recording(name: str) -> np.ndarray:
    """A stored recording (WAV or WebM/Opus) as 16 kHz int16 stereo; ``RecordingUnreadable`` if it is not audio."""
    with default_storage.open(name, "rb") as handle:
        data = handle.read()  # S3 file objects seek poorly; a call recording fits in memory
    return get_retranscriber().load_stereo(io.BytesIO(data))


# libopus settings for the archive (speech recorded at 16 kHz): "voip" keeps it in SILK, the
# speech coder, and complexity 6 (of 10) encodes a 32 s two-sided call in 409 ms of CPU instead of
# 653 ms (48 kHz input, default complexity) at the same size (127 KB against 136 KB at 32 kbit/s),
# with the same words re-transcribed from it and no crosstalk between the channels
# (tests/roleplay/test_after_call.py). Fed at 16 kHz, libopus skips the 48 kHz analysis the
# recording has nothing for; a decoder still plays it at 48 kHz.
ARCHIVE_OPUS_OPTIONS = {"application": "voip", "compression_level": "6"}


def encode_opus(stereo: np.ndarray, path: str, *, bitrate: int) -> None:
    """16 kHz int16 stereo -> WebM/Opus, both channels kept; encoded at the recording's own rate.

    The compression runs after every call, on the machine the live calls use: its CPU is the cost
    that matters (see ``ARCHIVE_OPUS_OPTIONS``).
    """
    import av

    with av.open(path, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=RATE, layout="stereo", options=dict(ARCHIVE_OPUS_OPTIONS))
        stream.bit_rate = bitrate
        for start in range(0, len(stereo), RATE * 10):
            block = np.ascontiguousarray(stereo[start:start + RATE * 10], dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def retranscribe(session: RealtimeSession, stereo: np.ndarray | None) -> dict[str, Any]:
    """Transcribe the whole call again offline, in the scenario's language; a call without audio is skipped."""
    if stereo is None or not len(stereo):
        return {"status": "skipped", "reason": "no recording", "segments": []}
    options = RetranscribeOptions(
        model_path=settings.ARCHIVE_ASR_MODEL_PATH or settings.ASR_MODEL_PATH,
        language=session.scenario.language,
        beam_size=settings.ARCHIVE_ASR_BEAM_SIZE,
        cpu_threads=settings.ARCHIVE_ASR_CPU_THREADS,
    )
    try:
        return get_retranscriber().retranscribe(stereo, options)
    except RecordingUnreadable as exc:
        return {"status": "failed", "reason": str(exc), "segments": []}
