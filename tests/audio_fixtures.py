"""Test speech made at test time with eSpeak NG (no audio files in the repo). Plain functions.

``speak`` says a text on its own. ``speak_with_pause`` says a whole sentence and inserts a pause
between two of its words, as a person who stops to think mid-clause: cut from the whole sentence's
audio, the words before the pause keep their mid-sentence intonation (a fragment spoken on its own
gets eSpeak's final fall, and an ASR rightly hears it as finished). ``spoken``, ``word_after``,
``cut_point`` and ``voiced_span`` are its parts, shared with bench/turn_taking.py.

Every utterance is synthesised in a process of its own, forked from a server that has never spoken,
so a text always comes out the same: libespeak-ng carries state from one utterance to the next (its
pitch flutter and wave phase; neither ``espeak_Initialize`` nor a seed resets them), and a test that
ran alone heard another take than the same test in the full suite ("finance team" became "final
steam"). ``take`` asks for another, equally reproducible take: the fresh synthesiser first says a
short primer ``take`` times.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np

from media_pipeline import audio
from tests.espeak_fresh import FreshProcesses

PRIMER = "One two three."
_fresh = FreshProcesses()


def _prime(take: int) -> None:
    from media_pipeline.engines.tts.espeak import EspeakTTSEngine

    for _ in range(take):
        list(EspeakTTSEngine().synthesize(PRIMER))


def _synthesise(text: str, voice: str, language: str, speed: float, take: int) -> tuple[np.ndarray, int]:
    """In the fresh process: eSpeak's int16 audio for ``text`` and its sample rate."""
    from media_pipeline.engines.tts.espeak import EspeakTTSEngine

    _prime(take)
    engine = EspeakTTSEngine()
    chunks = list(engine.synthesize(text, voice=voice, language=language, speed=speed))
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)), engine.sample_rate


@lru_cache(maxsize=512)
def _utterance(text: str, voice: str, language: str, speed: float, take: int) -> tuple[np.ndarray, int]:
    pcm, rate = _fresh.call(__name__, "_synthesise", text, voice, language, speed, take)
    pcm.setflags(write=False)  # shared by every caller that asks for the same take
    return pcm, rate


def speak(
    text: str, *, language: str = "en", rate: int = 16000, voice: str = "", speed: float = 1.0, take: int = 0
) -> np.ndarray:
    """``text`` spoken by eSpeak NG as float32 mono at ``rate``: the same samples every time."""
    pcm, native = _utterance(text, voice, language, speed, take)
    return audio.resample(pcm, native, rate)


def speak_pcm16(
    text: str, *, language: str = "en", rate: int = 16000, voice: str = "", speed: float = 1.0, take: int = 0
) -> np.ndarray:
    """Like :func:`speak` but int16, as a codec or a WAV would carry it."""
    return audio.float32_to_pcm16(speak(text, language=language, rate=rate, voice=voice, speed=speed, take=take))


def silence(ms: int, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(rate * ms / 1000), dtype=np.float32)


def noise(ms: int, rate: int = 16000, *, level_dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """White noise at a given RMS level: a quiet room, not speech."""
    amplitude = 10 ** (level_dbfs / 20)
    return (np.random.default_rng(seed).standard_normal(int(rate * ms / 1000)) * amplitude).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 16000) -> Path:
    return audio.write_wav(path, samples, rate)


def frames(samples: np.ndarray, rate: int = 16000, ms: int = 20) -> list[np.ndarray]:
    """Cut a buffer into ``ms`` frames as a live stream would deliver it (last one may be short)."""
    step = int(rate * ms / 1000)
    return [samples[i : i + step] for i in range(0, len(samples), step)]


# --- a pause between two words of one sentence ------------------------------------------------------
SPOKEN_RATE = 16000  # what ``spoken``, ``cut_point`` and ``voiced_span`` work at
VOICED = 0.01  # |sample| above this is voice (eSpeak's own silence is exact zeros)


def voiced_span(x: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the voiced samples of ``x`` ((0, 0) if none)."""
    idx = np.flatnonzero(np.abs(x) > VOICED)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


class _Event(ctypes.Structure):
    """libespeak-ng's ``espeak_EVENT`` (speak_lib.h)."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_void_p)]


_EVENT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EVENT_WORD, _EVENT_LIST_TERMINATED = 1, 0


def spoken(
    text: str, language: str = "en", speed: float = 1.0, take: int = 0
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """eSpeak NG's audio for ``text`` (16 kHz float32) and where each word starts in it, as
    ``(character index in text, sample)``: the synthesiser's own word events, so a cut "before word N"
    is exactly between words N-1 and N (an energy minimum is not: a comma's pause before "and" is
    quieter than the gap after it). Same voice, rate, sentence split and takes as ``speak``."""
    whole, words = _spoken_utterance(text, language, speed, take)
    return whole.copy(), list(words)


@lru_cache(maxsize=256)
def _spoken_utterance(text: str, language: str, speed: float, take: int) -> tuple[np.ndarray, tuple]:
    whole, words = _fresh.call(__name__, "_spoken_with_events", text, language, speed, take)
    return whole, tuple(words)


def _spoken_with_events(text: str, language: str, speed: float, take: int) -> tuple[np.ndarray, list]:
    """In the fresh process: the engine's audio callback is swapped for one that also reads the word
    events, and put back."""
    from media_pipeline.engines.tts import espeak
    from media_pipeline.engines.tts.text import sentence_split

    _prime(take)

    lib = espeak._library()  # noqa: SLF001 - the word events the engine ignores
    rate_wpm = int(np.clip(round(espeak.NORMAL_WPM * speed), espeak.MIN_WPM, espeak.MAX_WPM))
    pcm: list[np.ndarray] = []
    words: list[tuple[int, int]] = []
    offset = 0  # samples (at the synthesiser's rate) before the current piece
    base = 0  # characters of text before the current piece
    chunks: list[np.ndarray] = []

    def on_audio(wav: ctypes.POINTER(ctypes.c_short), count: int, events: ctypes.POINTER(_Event)) -> int:
        if wav and count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True))
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                words.append((base + events[i].text_position - 1,
                              offset + events[i].audio_position * lib.sample_rate // 1000))
            i += 1
        return 0

    callback = _EVENT_CALLBACK(on_audio)
    setter = lib.lib.espeak_SetSynthCallback
    with lib.lock:
        setter.argtypes = [_EVENT_CALLBACK]
        setter(callback)
        try:
            lib.set_voice(espeak.espeak_voice_for(language))
            for piece in sentence_split(text, language):
                base = text.index(piece, base)
                chunks.clear()
                lib.speak(piece, rate_wpm, espeak.NORMAL_PITCH)
                pcm += chunks
                offset += sum(c.size for c in chunks)
                base += len(piece)
        finally:
            setter.argtypes = [espeak._CALLBACK]  # noqa: SLF001
            setter(lib._callback)  # noqa: SLF001
    audio16 = audio.resample(np.concatenate(pcm), lib.sample_rate, SPOKEN_RATE)
    scale = SPOKEN_RATE / lib.sample_rate
    return audio16, [(char, int(sample * scale)) for char, sample in words]


def word_after(text: str, before: str) -> int:
    """The character index in ``text`` of the word that follows its prefix ``before`` (spaces and
    commas between them skipped)."""
    if not text.startswith(before):
        raise ValueError(f"{before!r} does not begin {text!r}")
    rest = text[len(before):]
    return len(before) + len(rest) - len(rest.lstrip(" ,，、"))


def cut_point(whole: np.ndarray, words: list[tuple[int, int]], chars: int) -> int:
    """The sample where the word starting at character ``chars`` begins, nudged back to the quietest
    5 ms of the 40 ms before it (so no onset is clipped). eSpeak's Mandarin words may span several
    characters; a cut inside one is placed in proportion to its characters (one syllable each) and
    moved to the quietest 5 ms within half a syllable: the dip between two syllables."""
    starts = dict(words)
    frame = SPOKEN_RATE // 200
    if chars in starts:
        at, reach = starts[chars], (SPOKEN_RATE * 40 // 1000, 0)
    else:
        before = max((c, s) for c, s in words if c < chars)
        after = min(((c, s) for c, s in words if c > chars), default=(None, voiced_span(whole)[1]))
        span_chars = (after[0] - before[0]) if after[0] is not None else chars - before[0] + 1
        syllable = (after[1] - before[1]) / max(span_chars, 1)
        at = int(before[1] + syllable * (chars - before[0]))
        reach = (int(syllable / 2), int(syllable / 2))
    lo, hi = max(frame, at - reach[0]), min(whole.size - frame, at + reach[1] + 1)
    energies = [(float(np.abs(whole[i - frame : i]).mean() + np.abs(whole[i : i + frame]).mean()), i)
                for i in range(lo, hi, frame // 2)]
    return min(energies)[1] if energies else at


def speak_with_pause(
    text: str, before: str, pause_ms: int, rate: int = 16000, *, language: str = "en", speed: float = 1.0,
    take: int = 0,
) -> np.ndarray:
    """The whole sentence ``text`` spoken by eSpeak NG with ``pause_ms`` of silence right before the
    word that follows its prefix ``before`` (float32 mono at ``rate``): "I understand that the
    budget | is tight this quarter." with the first half still rising, as a speaker who stops mid-clause."""
    whole, words = spoken(text, language, speed, take)
    at = cut_point(whole, words, word_after(text, before))
    paused = np.concatenate([whole[:at], silence(pause_ms, SPOKEN_RATE), whole[at:]])
    return audio.resample(paused, SPOKEN_RATE, rate)
