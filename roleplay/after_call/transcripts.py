"""The conversation as the archive writes it: JSON (for programs), plain text and WebVTT (for people).

Pure functions over the session's ``Utterance`` rows in ``seq`` order; the buyer is labelled with the
scenario's persona name when it has one.
"""

from __future__ import annotations

from typing import Any

from roleplay.models import RealtimeSession, Utterance

_LABEL = {Utterance.Speaker.TRAINEE: "Trainee", Utterance.Speaker.BUYER: "Buyer"}


def transcript_document(session: RealtimeSession, rows: list[Utterance]) -> dict[str, Any]:
    """``transcript.json``: every utterance with its timing, source and confidence."""
    return {
        "session_id": session.pk, "scenario": session.scenario.slug, "language": session.scenario.language,
        "channels": {"left": "trainee", "right": "buyer"}, "utterances": [_utterance_dict(u) for u in rows],
    }


def transcript_text(rows: list[Utterance], *, persona: str) -> str:
    """``transcript.txt``: one ``[mm:ss] Speaker: text`` line per utterance."""
    lines = []
    for u in rows:
        lines.append(f"[{_clock(u.start_ms, vtt=False)}] {_label(u, persona)}: {u.text}")
    return "\n".join(lines) + ("\n" if lines else "")


def transcript_vtt(rows: list[Utterance], *, persona: str) -> str:
    """WebVTT with one cue per utterance and the speaker as a voice span (``<v Trainee>``).

    A cue must end after it starts; typed turns have no duration, so they get one second.
    """
    out = ["WEBVTT", ""]
    for u in rows:
        end = u.end_ms if u.end_ms > u.start_ms else u.start_ms + 1000
        text = u.text.replace("-->", "->").replace("\n", " ")
        out += [str(u.seq), f"{_clock(u.start_ms, vtt=True)} --> {_clock(end, vtt=True)}",
                f"<v {_label(u, persona)}>{text}", ""]
    return "\n".join(out)


def _label(u: Utterance, persona: str) -> str:
    return persona if u.speaker == Utterance.Speaker.BUYER and persona else _LABEL.get(u.speaker, u.speaker)


def _utterance_dict(u: Utterance) -> dict[str, Any]:
    return {
        "seq": u.seq, "speaker": u.speaker, "source": u.source, "text": u.text, "language": u.language,
        "start_ms": u.start_ms, "end_ms": u.end_ms, "confidence": u.confidence, "interrupted": u.interrupted,
    }


def _clock(ms: int, *, vtt: bool) -> str:
    ms = max(0, int(ms))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{milli:03d}" if vtt else f"{h * 60 + m:02d}:{s:02d}"
