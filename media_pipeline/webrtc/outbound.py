"""The buyer's voice: an aiortc audio track that paces 20 ms frames against a monotonic clock.

aiortc's sender calls ``recv()`` in a loop and sends whatever it returns at once, so the track
itself is the clock. Frames are due at ``start + n * 20 ms`` (monotonic); silence goes out when
no reply audio is queued. For a client that asked for Opus DTX (``usedtx=1``, as the practice
page does), after ``DTX_AFTER_FRAMES`` of it the track sends only a DTX packet every
``DTX_EVERY_FRAMES`` (as libopus and browsers do it): a listening call then sends ~2.5 packets a
second instead of 50, which the client need not receive and decode. The 200 ms of silence sent
first after a reply also push its last frames out of a receiver's jitter buffer (aiortc's holds
four frames back until later ones arrive), and every 20 ms tick is still checked, so a reply
starts on time. If the event loop stalls for longer than ``REPACE_AFTER_S`` the schedule is
re-anchored instead of bursting the backlog out. A flush (barge-in) drops the queued audio
between two frames: the RTP timestamps keep counting up, so the client hears silence from the
next frame on, within 20 ms plus its jitter buffer.

The track hands aiortc encoded packets, not raw frames. Given a raw frame, aiortc's sender
Opus-encodes it on a thread pool (a thread hop per 20 ms frame per call) even when it is
silence, which is most of a call: the buyer listens more than it speaks. Given an ``av.Packet``
it only wraps the payload in RTP. So silence goes out as one payload encoded once per process
(no encoder, no thread), and only reply audio (plus ``TAIL_FRAMES`` of zeros after it, so the
encoder's look-ahead drains and its state ends in silence, as the listener's decoder does) is
encoded, off the loop, by this track's own encoder, ``AHEAD_FRAMES`` frames per trip to a thread.
The call recording takes the reply's 16 kHz copy as its frames go out, so nothing is resampled
per frame either: the loop's cost of a reply frame fell from ~440 to ~160 µs (four tracks, this
machine; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, CodecContext
from av.packet import Packet

from media_pipeline import metrics
from media_pipeline.audio import as_pcm16, float32_to_pcm16, resample
from roleplay.audio_format import SAMPLE_RATE

FRAME_MS = 20
REPACE_AFTER_S = 0.1
TAIL_FRAMES = 3  # zero frames still encoded after reply audio: drains Opus' 6.5 ms look-ahead
AHEAD_FRAMES = 10  # reply frames encoded per trip to a thread (200 ms): one hop instead of ten
# Opus DTX, as libopus does it: after 200 ms of silence only a TOC-only packet every 400 ms.
DTX_AFTER_FRAMES = 10
DTX_EVERY_FRAMES = 20
OPUS_BIT_RATE = 48_000  # mono speech; aiortc's own encoder sends 96 kbit/s stereo of a mono voice

# Process-wide outbound pacing record (all calls), read by the worker's stats and the benches.
SEND_INTERVALS: collections.deque[float] = collections.deque(maxlen=200_000)
UNDERRUNS = 0


class FrameEncoder:
    """One call's outbound encoder (Opus at 48 kHz, PCMA at 8 kHz): 20 ms of int16 mono → payload.

    Stateful (Opus predicts from the frames before), so one per track, used by one thread at a
    time (the track awaits each frame before the next).
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        if sample_rate == 48000:
            self.codec = CodecContext.create("libopus", "w")
            self.codec.bit_rate = OPUS_BIT_RATE
            self.codec.options = {"application": "voip"}
        elif sample_rate == 8000:
            self.codec = CodecContext.create("pcm_alaw", "w")
        else:
            raise ValueError(f"no outbound codec at {sample_rate} Hz")
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.sample_rate = sample_rate
        self.codec.time_base = self._time_base
        self._pts = 0

    def encode(self, samples: np.ndarray) -> bytes:
        """Encode one frame (blocking: call it off the event loop)."""
        frame = AudioFrame(format="s16", layout="mono", samples=self.frame_samples)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += self.frame_samples
        packets = self.codec.encode(frame)
        return b"".join(bytes(p) for p in packets)

    def encode_many(self, frames: list[np.ndarray]) -> list[bytes]:
        """Consecutive frames in one call (blocking): one thread hop for all of them."""
        return [self.encode(samples) for samples in frames]


def take_samples(queue: collections.deque, count: int) -> tuple[np.ndarray, int]:
    """The first ``count`` samples of a queue of int16 arrays, removed from it, zero-padded to
    ``count`` if the queue runs short; and how many were real samples."""
    parts: list[np.ndarray] = []
    need = max(count, 0)
    while need and queue:
        head = queue[0]
        parts.append(head[:need])
        need -= parts[-1].size
        if parts[-1].size == head.size:
            queue.popleft()
        else:
            queue[0] = head[parts[-1].size:]
    if need or not parts:
        parts.append(np.zeros(need, dtype=np.int16))
    return (np.concatenate(parts) if len(parts) > 1 else parts[0]), max(count, 0) - need


def grid_after(now: float) -> float:
    """The first point of the process-wide 20 ms grid at or after ``now`` (monotonic seconds).

    Every track's frames fall due on the same grid, so the loop wakes once per 20 ms for all of
    them (their timers expire together) instead of once per call at its own phase: with N calls
    that is N times fewer wake-ups for the same frames, and each call's pacing is unchanged.
    """
    step = FRAME_MS / 1000
    return math.ceil(now / step) * step


_SILENCE: dict[int, bytes] = {}


def silence_payload(sample_rate: int) -> bytes:
    """The payload of 20 ms of digital silence at this codec rate, encoded once per process."""
    if sample_rate not in _SILENCE:
        encoder = FrameEncoder(sample_rate)
        zeros = np.zeros(encoder.frame_samples, dtype=np.int16)
        payload = b""
        for _ in range(5):  # past the encoder's start-up: a steady-state silent frame
            payload = encoder.encode(zeros) or payload
        _SILENCE[sample_rate] = payload
    return _SILENCE[sample_rate]


def dtx_payload(sample_rate: int) -> bytes:
    """The silence payload's TOC byte alone (code 0: one frame of no bytes), RFC 6716's DTX frame.

    A decoder plays it as 20 ms of silence (libopus conceals the empty frame), and a WebRTC
    receiver takes a payload of at most two bytes as DTX, comfort noise rather than a lost packet.
    """
    return bytes([silence_payload(sample_rate)[0] & 0xFC])


@dataclass
class Segment:
    """A piece of reply audio (one sentence) with its text, to know what was actually played."""

    text: str
    total: int
    played: int = 0


@dataclass
class PlayResult:
    reply_id: str
    played_samples: int
    sample_rate: int
    interrupted: bool
    spoken_text: str
    first_frame_at: float | None  # monotonic time the first reply frame left the track

    @property
    def duration_ms(self) -> int:
        return int(round(self.played_samples * 1000 / self.sample_rate))


@dataclass
class _Reply:
    reply_id: str
    done: asyncio.Future
    segments: collections.deque = field(default_factory=collections.deque)  # not yet fully played
    finished: list[Segment] = field(default_factory=list)
    buffer: collections.deque = field(default_factory=collections.deque)  # int16 arrays
    buffered: int = 0
    played: int = 0
    closed: bool = False  # the producer has pushed everything
    first_frame_at: float | None = None
    recorded: collections.deque = field(default_factory=collections.deque)  # the same audio at 16 kHz (int16)
    recorded_out: int = 0  # 16 kHz samples handed to the recording so far


class OutboundAudioTrack(MediaStreamTrack):
    """Mono int16 frames at the negotiated codec rate (8 kHz PCMA, 48 kHz Opus)."""

    kind = "audio"

    def __init__(
        self,
        sample_rate: int,
        *,
        record: Callable[[np.ndarray, float], None] | None = None,
        keep_intervals: int = 3000,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        self._silence = np.zeros(self.frame_samples, dtype=np.int16)
        self._start: float | None = None
        self._sent = 0  # frames since the last anchor
        self._pts = 0
        self._reply: _Reply | None = None
        self._record = record
        self.underruns = 0
        self.frames_sent = 0
        self.last_send_at: float | None = None
        self.intervals: collections.deque[float] = collections.deque(maxlen=keep_intervals)
        self.on_first_frame: Callable[[str, float], None] | None = None
        self._encoder: FrameEncoder | None = None
        self._silent_payload = b""
        self._tail = 0  # zero frames still to encode after reply audio
        self._ahead: collections.deque[bytes] = collections.deque()  # payloads of the reply's next frames
        self._ahead_generation = 0  # bumped whenever queued reply audio is dropped or replaced
        self.dtx = False  # Opus DTX, when the client asked for it (``configure``)
        self._quiet = 0  # silent frames in a row (DTX starts after DTX_AFTER_FRAMES)
        self._unsent = 0  # frames not sent (DTX) since the last packet

    def configure(self, sample_rate: int, *, dtx: bool = False) -> None:
        """Set the codec's rate once negotiation has picked it (before the first ``recv``), and
        whether the client asked for Opus DTX."""
        self.dtx = dtx and sample_rate == 48000
        if sample_rate == self.sample_rate:
            return
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        self._silence = np.zeros(self.frame_samples, dtype=np.int16)

    # --- producer side --------------------------------------------------------------------------
    @property
    def playing(self) -> str | None:
        return self._reply.reply_id if self._reply else None

    @property
    def first_frame_at(self) -> float | None:
        """When the reply being played became audible (monotonic; None: not yet, or nothing playing)."""
        return self._reply.first_frame_at if self._reply else None

    def begin(self, reply_id: str) -> asyncio.Future:
        """Start a reply; the returned future resolves to a :class:`PlayResult` when it ends."""
        if self._reply is not None:
            self.flush()  # (drops what was encoded ahead; a reply that played out left nothing ahead)
        done = asyncio.get_running_loop().create_future()
        self._reply = _Reply(reply_id=reply_id, done=done)
        return done

    def push(self, samples: np.ndarray, text: str = "", recorded: np.ndarray | None = None) -> None:
        """Queue int16 (or float) mono audio at ``sample_rate`` for the current reply.

        ``recorded`` is the same audio at 16 kHz for the call recording, made where the reply was
        synthesised (off the loop, one resample per sentence); without it the track resamples the
        sentence here, once. Either way no frame is resampled on the loop as it goes out: that was
        a resampler call per 20 ms of reply audio, the track's largest cost after sending.
        """
        reply = self._reply
        if reply is None or reply.closed:
            return
        pcm = as_pcm16(samples)
        if pcm.size == 0:
            return
        reply.buffer.append(pcm)
        reply.buffered += pcm.size
        reply.segments.append(Segment(text=text, total=int(pcm.size)))
        if self._record is not None:
            if recorded is None:
                recorded = float32_to_pcm16(resample(pcm, self.sample_rate, SAMPLE_RATE))
            reply.recorded.append(as_pcm16(recorded))

    def close_reply(self) -> None:
        """No more audio for this reply: it completes once the queue has played out."""
        reply = self._reply
        if reply is None:
            return
        reply.closed = True
        if reply.buffered == 0:
            self._complete(interrupted=False)

    def flush(self) -> PlayResult | None:
        """Barge-in: drop everything not yet sent, now. Returns what had been played."""
        if self._reply is None:
            return None
        return self._complete(interrupted=True)

    def _complete(self, *, interrupted: bool) -> PlayResult:
        reply = self._reply
        assert reply is not None
        self._reply = None
        if interrupted:
            self._drop_ahead()  # (a reply that played out has used every frame encoded ahead)
        spoken = [s.text for s in reply.finished if s.text]
        if interrupted and reply.segments:
            current = reply.segments[0]
            if current.played and current.text:
                words = current.text.split()
                keep = int(len(words) * current.played / max(1, current.total))
                if keep:
                    spoken.append(" ".join(words[:keep]))
        result = PlayResult(
            reply_id=reply.reply_id,
            played_samples=reply.played,
            sample_rate=self.sample_rate,
            interrupted=interrupted,
            spoken_text=" ".join(spoken).strip(),
            first_frame_at=reply.first_frame_at,
        )
        if not reply.done.done():
            reply.done.set_result(result)
        return result

    def _drop_ahead(self) -> None:
        self._ahead.clear()
        self._ahead_generation += 1

    # --- consumer side (aiortc's sender) ----------------------------------------------------------
    def _next_samples(self) -> tuple[np.ndarray, bool]:
        reply = self._reply
        if reply is None:
            return self._silence, False
        if reply.buffered == 0:
            if not reply.closed and reply.played:
                # Audio had started and the next sentence is late: the listener hears a gap.
                global UNDERRUNS
                UNDERRUNS += 1
                self.underruns += 1
                metrics.OUTBOUND_UNDERRUNS_TOTAL.inc()
            return self._silence, False
        samples, got = take_samples(reply.buffer, self.frame_samples)
        reply.buffered -= got
        reply.played += got
        self._advance_segments(reply, got)
        return samples, True

    def _recorded_part(self, reply: _Reply) -> np.ndarray:
        """The 16 kHz recording of what has been played since the last call (zeros if it ran short)."""
        due = reply.played * SAMPLE_RATE // self.sample_rate
        count, reply.recorded_out = due - reply.recorded_out, due
        return take_samples(reply.recorded, count)[0]

    @staticmethod
    def _advance_segments(reply: _Reply, count: int) -> None:
        while count and reply.segments:
            seg = reply.segments[0]
            step = min(count, seg.total - seg.played)
            seg.played += step
            count -= step
            if seg.played >= seg.total:
                reply.finished.append(reply.segments.popleft())

    def _frames_ahead(self, reply: _Reply, count: int) -> list[np.ndarray]:
        """Up to ``count`` next frames of queued reply audio, not consumed: whole frames only, but
        the closing partial frame of a finished reply zero-padded exactly as ``_next_samples`` pads it."""
        fs = self.frame_samples
        queued, got = take_samples(collections.deque(reply.buffer), count * fs)  # a copy: a peek
        whole, rest = divmod(got, fs)
        if rest and reply.closed and got == reply.buffered:
            whole += 1
        return [queued[i * fs:(i + 1) * fs] for i in range(whole)]

    async def _payload(self, samples: np.ndarray, voiced: bool) -> bytes:
        """The frame's encoded payload: the shared silence, or this track's encoder off the loop.

        Reply frames are encoded ``AHEAD_FRAMES`` at a time: the frame due now and the queued ones
        after it, in one trip to a thread, so the next nine come from ``_ahead`` with no hop. A
        barge-in or a new reply drops what was encoded ahead (``_drop_ahead``); the encoder has then
        run past frames never sent, which its listener hears as a lost packet at a cut anyway.
        """
        loop = asyncio.get_running_loop()
        if self._encoder is None or self._encoder.sample_rate != self.sample_rate:
            rate = self.sample_rate
            self._silent_payload = await loop.run_in_executor(None, silence_payload, rate)
            self._encoder = FrameEncoder(rate)
            self._drop_ahead()
        if voiced:
            self._tail = TAIL_FRAMES
            if self._ahead:
                return self._ahead.popleft()
            frames = [samples]
            if self._reply is not None:
                frames += self._frames_ahead(self._reply, AHEAD_FRAMES - 1)
            generation = self._ahead_generation
            payloads = await loop.run_in_executor(None, self._encoder.encode_many, frames)
            if generation == self._ahead_generation:
                self._ahead.extend(payloads[1:])
            return payloads[0]
        if self._tail:
            self._tail -= 1
            return await loop.run_in_executor(None, self._encoder.encode, samples)
        return self._silent_payload

    async def recv(self) -> Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._wait_due()
            samples, voiced = self._next_samples()
            self._quiet = 0 if voiced else self._quiet + 1
            if voiced or self._tail or self._quiet <= DTX_AFTER_FRAMES or not self.dtx:
                payload = None
                break
            if (self._quiet - DTX_AFTER_FRAMES) % DTX_EVERY_FRAMES == 1:
                payload = dtx_payload(self.sample_rate)
                break
            # Opus DTX: a silent frame that is not sent. Its time still passes (pts, the schedule),
            # and the next frame is due 20 ms later, so a reply starts within one frame as before.
            self._pts += self.frame_samples
            self._unsent += 1
        sent_at = time.monotonic()
        if self.last_send_at is not None and not self._unsent:
            self.intervals.append(sent_at - self.last_send_at)
            SEND_INTERVALS.append(sent_at - self.last_send_at)
        self.last_send_at, self._unsent = sent_at, 0
        reply = self._reply
        if voiced and reply is not None:
            if reply.first_frame_at is None:
                reply.first_frame_at = sent_at
                if self.on_first_frame:
                    self.on_first_frame(reply.reply_id, sent_at)
            if self._record:
                self._record(self._recorded_part(reply), sent_at)
            if reply.closed and reply.buffered == 0:
                self._complete(interrupted=False)
        packet = Packet(payload if payload is not None else await self._payload(samples, voiced))
        packet.pts = self._pts
        packet.time_base = self._time_base
        self._pts += self.frame_samples
        self.frames_sent += 1
        return packet

    async def _wait_due(self) -> None:
        """Sleep until the next frame is due on the 20 ms schedule (re-anchored after a stall)."""
        now = time.monotonic()
        if self._start is None:
            self._start, self._sent = grid_after(now), 0
            if self._start > now:
                await asyncio.sleep(self._start - now)
            return
        self._sent += 1
        due = self._start + self._sent * FRAME_MS / 1000
        if now - due > REPACE_AFTER_S:
            # The loop stalled: start a new schedule rather than burst the backlog out.
            self._start, self._sent = grid_after(now), 0
            due = self._start
        if due > now:
            await asyncio.sleep(due - now)


def pacing_stats() -> dict[str, float]:
    """Outbound frame-interval jitter (|interval - 20 ms|) percentiles in ms, and underruns, this process."""
    values = np.abs(np.asarray(SEND_INTERVALS, dtype=np.float64) - FRAME_MS / 1000) * 1000
    if values.size == 0:
        return {"frames": 0, "underruns": UNDERRUNS}
    return {
        "frames": int(values.size),
        "jitter_p50_ms": float(np.percentile(values, 50)),
        "jitter_p99_ms": float(np.percentile(values, 99)),
        "jitter_max_ms": float(values.max()),
        "underruns": UNDERRUNS,
    }
