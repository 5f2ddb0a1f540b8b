"""Build an ended-to-be session the way a real call leaves it: utterances plus a stereo recording.

Speech is made with eSpeak NG at test time and placed on both sides of a ``CallRecorder`` at the
utterances' session-relative times (trainee left, buyer right), then saved through storage and
linked from ``session.recording`` exactly as the media worker does. Shared by the after-call
tests and ``bench/post_session.py``.
"""

from __future__ import annotations

from media_pipeline.recording import CallRecorder
from roleplay import services
from roleplay.models import RealtimeSession, Scenario, User
from tests.audio_fixtures import speak

CONVERSATION: list[tuple[str, str]] = [
    ("buyer", "Margaret Chen speaking. What is this about?"),
    ("trainee", "Hi Margaret, this is Sam from Ledgerly. How do you reconcile freight invoices today?"),
    ("buyer", "By hand, mostly. It takes my team about a week every month."),
    ("trainee", "What does a billing error usually cost you?"),
    ("buyer", "Last year one overbilling error cost us four hundred thousand dollars. The price worries me."),
    ("trainee", "Our customers see payback in under six months from the savings alone."),
    ("buyer", "That number is not small. What would the next step be?"),
    ("trainee", "Could we schedule a demo with your controller next week?"),
    ("buyer", "Fine, send me an invite for Tuesday."),
]


def make_recorded_session(
    *,
    trainee: User,
    scenario: Scenario,
    turns: list[tuple[str, str]] | None = None,
    gap_ms: int = 500,
    repeat: int = 1,
) -> RealtimeSession:
    """A live session with ``turns`` (``repeat`` times over) spoken, transcribed and recorded."""
    session = services.session_create(trainee=trainee, scenario=scenario, transport="webrtc")
    recorder = CallRecorder(session.pk)
    cursor = 300
    for _ in range(repeat):
        for speaker, text in turns or CONVERSATION:
            pcm = speak(text)
            duration = round(len(pcm) * 1000 / 16000)
            recorder.add(speaker, pcm, at_ms=cursor)
            services.utterance_append(
                session=session, speaker=speaker, text=text, start_ms=cursor, end_ms=cursor + duration,
                confidence=0.9,
            )
            cursor += duration + gap_ms
    name = recorder.save()
    RealtimeSession.objects.filter(pk=session.pk).update(recording=name)
    session.refresh_from_db()
    return session
