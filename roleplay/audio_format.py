"""The one sample rate the product's audio is in: 16 kHz, from the microphone to the stored recording.

The speech models (Whisper, Paraformer, Silero VAD) take 16 kHz mono, so every inbound stream is
resampled to it once; recordings are kept at the same rate (trainee left, buyer right), so the
after-call job re-transcribes a stored turn without resampling it. It lives in roleplay because
the stored recording is the domain's and roleplay imports nothing from media_pipeline; the media
pipeline imports it from here.
"""

from __future__ import annotations

SAMPLE_RATE = 16000  # Hz
