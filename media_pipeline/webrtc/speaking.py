"""Speaking, the WebRTC call's voice: streamed reply text → sentence-by-sentence TTS → the paced
outbound track, with barge-in and the facts of what was actually heard.

One :class:`Speaker` per call. Replies are spoken one at a time (a lock), each on the call's current
outbound track (a re-offer replaces the track). Text arrives as a stream (the brain's chunks):
:class:`SentenceBuffer` cuts it into sentences so the first one is synthesised while the brain still
writes the rest. Synthesis runs on the engine pool's TTS executor, never on the loop. When the
trainee barges in, or the turn stage withdraws a reply because the trainee went on
(``media_pipeline.joining``), the track is flushed and the reply reports what was played.
The chunk path has no speaker: its reply is a file (``media_pipeline.chunked.turns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lingecho.resilience.redaction import redact
from media_pipeline.audio import float32_to_pcm16, resample
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines
from media_pipeline.engines.tts.text import SentenceBuffer
from media_pipeline.webrtc.outbound import OutboundAudioTrack, PlayResult
from media_pipeline.webrtc.peer import Negotiated
from roleplay.audio_format import SAMPLE_RATE
from roleplay.models import Utterance

log = logging.getLogger(__name__)


class SpeakerHost(Protocol):
    """What the speaker needs of its call (``media_pipeline.webrtc.call.CallSession``)."""

    session_id: str
    engines: Engines
    outbound: OutboundAudioTrack | None
    negotiated: Negotiated | None
    connected: bool

    def session_ms(self, monotonic: float) -> int: ...
    async def emit(self, message_type: str, data: dict[str, Any]) -> None: ...
    async def error(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None: ...
    def spawn(self, coro: Any) -> asyncio.Task: ...


@dataclass
class Spoken:
    """What one reply did on the outbound track, on the session timeline (ms since the session start)."""

    played: PlayResult
    tts_first_ms: float | None
    start_ms: int  # the first frame went out (when it stopped, if nothing was played)
    end_ms: int  # the last played frame finished (barge-in: the played part only)


def synthesize(engines: Engines, text: str, rate: int, voice: str, language: str, speed: float, pitch: float) -> Any:
    """One sentence -> int16 at the codec rate, the same at 16 kHz for the recording, and the time it
    took (runs on the TTS executor thread, so neither resample runs on the event loop)."""
    started = time.perf_counter()
    chunks = list(engines.tts.synthesize(text, voice=voice, language=language, speed=speed, pitch=pitch))
    if not chunks:
        empty = np.zeros(0, dtype=np.int16)
        return empty, empty, time.perf_counter() - started
    pcm = np.concatenate(chunks)
    audio = float32_to_pcm16(resample(pcm, engines.tts.sample_rate, rate))
    recorded = audio if rate == SAMPLE_RATE else float32_to_pcm16(resample(pcm, engines.tts.sample_rate, SAMPLE_RATE))
    return audio, recorded, time.perf_counter() - started


async def text_once(text: str) -> AsyncIterator[str]:
    """A whole text as a one-chunk stream (a typed reply, a ``tts_request``)."""
    yield text


def playback_facts(spoken: Spoken) -> dict[str, Any]:
    """How a reply went out: voice, when, and (after barge-in) only the words that were played."""
    played = spoken.played
    facts: dict[str, Any] = {"source": Utterance.Source.VOICE, "start_ms": spoken.start_ms,
                             "end_ms": spoken.end_ms, "interrupted": played.interrupted}
    if played.interrupted and played.spoken_text:
        facts["text"] = played.spoken_text
    return facts


class Speaker:
    def __init__(self, host: SpeakerHost) -> None:
        self.host = host
        self._lock = asyncio.Lock()
        self.barge_in_at: float | None = None  # monotonic: the reply being spoken was told to stop
        self.barge_in_stop_ms: float | None = None  # the last barge-in: stop asked → playback stopped
        self.withdrawn: set[str] = set()  # reply ids the trainee's going on withdrew (joining)

    @property
    def playing(self) -> str | None:
        """The id of the reply on the track now, if any."""
        track = self.host.outbound
        return track.playing if track is not None else None

    def barge_in(self, at: float) -> None:
        """Stop the reply being played now; it reports ``interrupted`` with what was heard."""
        self.barge_in_at = at
        if self.host.outbound is not None:
            self.host.outbound.flush()  # resolves the reply's future: ``speak`` returns

    def withdraw(self, reply_id: str, at: float) -> None:
        """Stop a reply that is not to be part of the conversation (``tts_complete`` says ``withdrawn``)."""
        self.withdrawn.add(reply_id)
        self.barge_in(at)

    async def speak(
        self,
        request_id: str,
        chunks: AsyncIterator[str],
        *,
        voice: str = "",
        language: str = "en",
        speed: float = 1.0,
        pitch: float = 1.0,
        text_response: dict[str, Any] | None = None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> Spoken | None:
        """Speak a streamed text sentence by sentence; returns what was played, and when (None: no connection).

        ``on_text`` is awaited with the whole text once the stream is complete, before ``text_response``.
        """
        host = self.host
        async with self._lock:
            track = host.outbound
            if track is None or not host.connected:
                await host.error(ErrorCode.TTS_FAILED, "No media connection to speak on; send an offer first.",
                                 {"request_id": request_id})
                return None
            self.barge_in_at = None
            done = track.begin(request_id)
            await host.emit("tts_start", {"request_id": request_id,
                                          "audio_format": host.negotiated.codec if host.negotiated else "",
                                          "sample_rate": track.sample_rate})
            first_audio: list[float] = []
            producer = host.spawn(self._produce(track, chunks, voice, language, speed, pitch, first_audio,
                                                text_response, on_text))
            result: PlayResult = await done
            stopped_at = time.monotonic()
            if not producer.done():
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            if result.interrupted and self.barge_in_at is not None:
                self.barge_in_stop_ms = (time.monotonic() - self.barge_in_at) * 1000
            complete = {"request_id": request_id, "duration_ms": result.duration_ms, "interrupted": result.interrupted}
            if request_id in self.withdrawn:  # the trainee went on: this reply (and its text) is withdrawn
                complete["withdrawn"] = True
            await host.emit("tts_complete", complete)
            start_ms, end_ms = self._played_span(result, stopped_at)
            return Spoken(result, first_audio[0] if first_audio else None, start_ms, end_ms)

    def _played_span(self, result: PlayResult, stopped_at: float) -> tuple[int, int]:
        """Session ms of the reply's first frame and of the end of its last played frame.

        Frames are paced in real time, so the end is the first frame plus the played duration, or
        later when the track starved between sentences (then the reply ended when playback stopped).
        """
        stopped_ms = self.host.session_ms(stopped_at)
        if result.first_frame_at is None:
            return stopped_ms, stopped_ms
        start_ms = self.host.session_ms(result.first_frame_at)
        return start_ms, max(start_ms + result.duration_ms, stopped_ms)

    async def _produce(
        self, track: OutboundAudioTrack, chunks: AsyncIterator[str], voice: str, language: str, speed: float,
        pitch: float, first_audio: list[float], text_response: dict[str, Any] | None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        host = self.host
        sentences = SentenceBuffer(language)
        parts: list[str] = []
        mute: list[str] = []  # set by a TTS failure: the rest of the reply goes out as text only
        try:
            async for chunk in chunks:
                parts.append(chunk)
                for sentence in sentences.push(chunk):
                    await self._say(track, sentence, voice, language, speed, pitch, first_audio, mute)
            text = "".join(parts).strip()
            if on_text is not None:
                try:
                    await on_text(text)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the caller persists what was heard instead
                    log.exception("reply text not persisted early", extra={"session_id": host.session_id})
            if text_response is not None:
                await host.emit("text_response", {**text_response, "text": text,
                                                  "language": language, "confidence": 1.0})
            for sentence in sentences.flush():
                await self._say(track, sentence, voice, language, speed, pitch, first_audio, mute)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as ERR_TTS_FAILED; what was queued still plays
            log.exception("reply synthesis failed", extra={"session_id": host.session_id})
            await host.error(ErrorCode.TTS_FAILED, "Speech synthesis failed.", {"reason": str(exc)})
        finally:
            track.close_reply()

    async def _say(
        self, track: OutboundAudioTrack, sentence: str, voice: str, language: str, speed: float, pitch: float,
        first_audio: list[float], mute: list[str] | None = None,
    ) -> None:
        if mute:
            return
        engines = self.host.engines
        try:
            audio, recorded, took = await engines.tts_pool.run(
                synthesize, engines, sentence, track.sample_rate, voice, language, speed, pitch
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if mute is None:
                raise
            # No engine could speak (a cloud fallback already failed too): say so once and keep
            # reading the reply, so the trainee still gets its text as text_response.
            mute.append(str(exc))
            log.warning("reply synthesis failed", extra={"session_id": self.host.session_id})
            await self.host.error(ErrorCode.TTS_FAILED, "Speech synthesis failed; the reply is sent as text.",
                                  {"reason": redact(str(exc)), "engine": engines.tts.name})
            return
        if not first_audio:
            first_audio.append(took * 1000)
        track.push(audio, text=sentence, recorded=recorded)


__all__ = ["Speaker", "SpeakerHost", "Spoken", "playback_facts", "synthesize", "text_once"]
