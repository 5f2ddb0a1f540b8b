"""eSpeak NG through ctypes on the library and data that ``espeakng-loader`` ships.

libespeak-ng keeps global state and is not re-entrant, so the process has one synthesiser and
a lock around each sentence. The lock is never held across a ``yield``: a caller that stops
iterating half-way (barge-in) cannot leave the library locked. At ~1000x real time a sentence
takes a few milliseconds, so the lock is never contended for long.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator

import numpy as np

from media_pipeline.engines.tts.base import TTSEngine, TTSError, check_prosody
from media_pipeline.engines.tts.text import is_chinese, sentence_split

log = logging.getLogger(__name__)

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # without it the library calls exit() on a data error
CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE = 1
PARAM_PITCH = 3
EE_OK = 0

NORMAL_WPM = 175
MIN_WPM, MAX_WPM = 80, 450
NORMAL_PITCH = 50

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def espeak_voice_for(language: str) -> str:
    """Map a protocol language tag to an eSpeak voice name."""
    lang = (language or "en").lower().replace("_", "-")
    if is_chinese(lang):
        return "yue" if lang.startswith("yue") or lang == "zh-hk" else "cmn"
    if lang in ("en", "en-us"):
        return "en-us"
    return lang


class _Espeak:
    """The process-wide library handle. All calls happen under ``lock``."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({rate}) with data at {data.decode()}")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav: ctypes.POINTER(ctypes.c_short), count: int, _events: int) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True))
        return 0

    def set_voice(self, name: str) -> bool:
        if name == self._voice:
            return True
        ok = self.lib.espeak_SetVoiceByName(name.encode()) == EE_OK
        self._voice = name if ok else None
        return ok

    def speak(self, text: str, rate_wpm: int, pitch: int) -> list[np.ndarray]:
        """Synthesise one piece of text with the current voice; caller holds ``lock``."""
        self.lib.espeak_SetParameter(PARAM_RATE, rate_wpm, 0)
        self.lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        self._chunks = []
        err = self.lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        chunks, self._chunks = self._chunks, []
        if err != EE_OK:
            raise TTSError(f"espeak_Synth failed with error {err}")
        return chunks


_espeak: _Espeak | None = None
_espeak_lock = threading.Lock()


def _library() -> _Espeak:
    global _espeak
    with _espeak_lock:
        if _espeak is None:
            _espeak = _Espeak()
        return _espeak


class EspeakTTSEngine(TTSEngine):
    """Offline default TTS. ``voice`` may name an eSpeak voice (``"en-us+f3"``, ``"cmn"``)."""

    name = "espeak"

    def __init__(self, *, default_voice: str = "") -> None:
        self.default_voice = default_voice

    @property
    def sample_rate(self) -> int:
        return _library().sample_rate

    def resolve_voice(self, voice: str, language: str) -> list[str]:
        """Voices to try in order: the named one, then the language's, then English."""
        candidates = [v for v in (voice, self.default_voice) if v and v.lower() != "default"]
        candidates += [espeak_voice_for(language), "en-us"]
        return list(dict.fromkeys(candidates))

    def synthesize(
        self,
        text: str,
        *,
        voice: str = "",
        language: str = "en",
        speed: float = 1.0,
        pitch: float = 1.0,
    ) -> Iterator[np.ndarray]:
        check_prosody(speed, pitch)
        rate_wpm = int(np.clip(round(NORMAL_WPM * speed), MIN_WPM, MAX_WPM))
        pitch_value = int(np.clip(round(NORMAL_PITCH * pitch), 0, 100))
        lib = _library()
        for sentence in sentence_split(text or "", language):
            with lib.lock:
                self._select_voice(lib, voice, language)
                chunks = lib.speak(sentence, rate_wpm, pitch_value)
            yield from chunks

    def _select_voice(self, lib: _Espeak, voice: str, language: str) -> None:
        for name in self.resolve_voice(voice, language):
            if lib.set_voice(name):
                if voice and name != voice:
                    log.info("espeak voice not found, using a fallback", extra={"voice": voice, "used": name})
                return
        raise TTSError(f"no eSpeak voice available for voice={voice!r} language={language!r}")
