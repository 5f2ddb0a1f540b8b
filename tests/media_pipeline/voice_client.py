"""A real aiortc client for voice tests and benches: speaks eSpeak audio, hears the buyer.

``SpeechTrack`` paces 20 ms frames like a microphone (8 kHz for PCMA, 48 kHz for Opus);
``VoiceClient`` makes the offer (bundled or trickled candidates), consumes the server's track and
keeps what it heard at 16 kHz with arrival times. ``ContractPeer`` plays the signaling consumer's
part of ``media_pipeline.contract`` over a channel layer, for tests that drive the worker directly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import re
import time
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from media_pipeline.audio import Resampler, downmix, float32_to_pcm16, rms
from media_pipeline.contract import MEDIA_CHANNEL, to_worker

RATES = {"pcma": 8000, "opus": 48000}
MIMES = {"pcma": "audio/PCMA", "opus": "audio/opus"}


class SpeechTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.frame = rate // 50
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._start: float | None = None
        self._n = 0
        self._pts = 0
        self.last_voiced_at: float | None = None
        self.done = asyncio.Event()
        self.garbage = False

    def play(self, samples_float: np.ndarray) -> None:
        pcm = float32_to_pcm16(samples_float)
        for i in range(0, len(pcm), self.frame):
            chunk = pcm[i : i + self.frame]
            if chunk.size < self.frame:
                chunk = np.pad(chunk, (0, self.frame - chunk.size))
            self._queue.append(chunk)
        self.done.clear()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._n += 1
            due = self._start + self._n * 0.02
            if due > now:
                await asyncio.sleep(due - now)
        if self._queue:
            samples = self._queue.popleft()
            if np.any(samples):
                self.last_voiced_at = time.monotonic()
            if not self._queue:
                self.done.set()
        else:
            samples = np.zeros(self.frame, dtype=np.int16)
        frame = AudioFrame(format="s16", layout="mono", samples=self.frame)
        frame.planes[0].update(samples.tobytes())
        frame.pts = self._pts
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self.frame
        return frame


def with_opus_dtx(sdp: str) -> str:
    """``usedtx=1`` on the offer's Opus payload type (the page's ``withOpusDtx``)."""
    found = re.search(r"a=rtpmap:(\d+) opus/48000[^\r\n]*", sdp, re.IGNORECASE)
    if not found:
        return sdp
    fmtp = re.compile(rf"^a=fmtp:{found.group(1)} ([^\r\n]*)", re.MULTILINE)
    if fmtp.search(sdp):
        return fmtp.sub(lambda m: m.group(0) if "usedtx=" in m.group(1) else m.group(0) + ";usedtx=1", sdp, count=1)
    return sdp.replace(found.group(0), f"{found.group(0)}\r\na=fmtp:{found.group(1)} usedtx=1", 1)


class VoiceClient:
    def __init__(self, codec: str = "pcma", *, codecs: list[str] | None = None, dtx: bool = False) -> None:
        self.codec = codec
        self.dtx = dtx  # ask for Opus DTX in the offer, as the practice page does
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = SpeechTrack(RATES[codec])
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        order = codecs or [codec]
        transceiver.setCodecPreferences([c for name in order for c in caps if c.mimeType == MIMES[name]])
        self.heard: list[tuple[float, float]] = []  # (arrival monotonic, rms) per frame
        self.heard_audio: list[np.ndarray] = []
        self.first_sound_at: list[float] = []
        self._consumers: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._consumers.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        resampler: Resampler | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            mono = downmix(frame.to_ndarray(), len(frame.layout.channels))
            if resampler is None:
                resampler = Resampler(frame.sample_rate, 16000)
            x = resampler.process(mono)
            level = rms(x)
            self.heard.append((now, level))
            self.heard_audio.append(x)
            if level > 0.01:
                self.first_sound_at.append(now)

    def sound_since(self, t: float) -> float | None:
        """Arrival time of the first non-silent frame heard after ``t``."""
        for at, level in self.heard:
            if at > t and level > 0.01:
                return at
        return None

    def heard_rms_since(self, t: float) -> float:
        levels = [level for at, level in self.heard if at > t]
        return max(levels) if levels else 0.0

    async def offer(self, *, trickle: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Offer data for the protocol; with ``trickle`` the candidates come back separately."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if self.dtx:
            sdp = with_opus_dtx(sdp)
        candidates: list[dict[str, Any]] = []
        kept: list[str] = []
        mline = -1
        for line in sdp.splitlines():
            if line.startswith("m="):
                mline += 1
            if trickle and line.startswith("a=candidate:"):
                candidates.append({"candidate": line[2:], "sdp_mid": "0", "sdp_mline_index": mline})
                continue
            if trickle and line.startswith("a=end-of-candidates"):
                continue
            kept.append(line)
        return {"sdp": "\r\n".join(kept) + "\r\n", "candidates": []}, candidates

    async def accept(self, answer: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await self.pc.close()


class ContractPeer:
    """The signaling consumer's side of the channel-layer contract, for driving a worker in tests."""

    def __init__(self, layer: Any, session_id: str) -> None:
        self.layer = layer
        self.session_id = session_id
        self.reply_channel = ""
        self.worker_channel: str | None = None
        self.events: list[dict[str, Any]] = []
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self.session_end: dict[str, Any] | None = None
        self._taken: set[int] = set()

    async def start(self) -> ContractPeer:
        self.reply_channel = await self.layer.new_channel()
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        while True:
            message = await self.layer.receive(self.reply_channel)
            if message["type"] == "media.pinned":
                self.worker_channel = message["worker_channel"]
                continue
            if message["type"] == "media.session_end":
                self.session_end = message
                message = {"type": "media.event", "message": {"type": "session_end", "data": message}}
            item = {**message["message"], "at": time.monotonic()}
            self.events.append(item)
            await self._inbox.put(item)

    async def send(self, kind: str, **data: Any) -> None:
        message = to_worker(kind, session_id=self.session_id, reply_channel=self.reply_channel, **data)
        if kind == "media.offer":
            await self.layer.send(MEDIA_CHANNEL, message)
        else:
            for _ in range(200):
                if self.worker_channel:
                    break
                await asyncio.sleep(0.01)
            await self.layer.send(self.worker_channel, message)

    async def expect(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` (matching ``match``) not returned before, waiting if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for index, item in enumerate(self.events):
                if index in self._taken or item["type"] != kind:
                    continue
                if all(item["data"].get(k) == v for k, v in match.items()):
                    self._taken.add(index)
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e["type"] for e in self.events]
                raise TimeoutError(f"no {kind} within {timeout}s; saw {seen}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inbox.get(), remaining)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()


async def connect(peer: ContractPeer, client: VoiceClient, *, trickle: bool = False, scenario_id: int = 0,
                  user_id: int = 0) -> dict[str, Any]:
    """Offer → answer → connected through the contract; returns the ``connected`` data."""
    offer, candidates = await client.offer(trickle=trickle)
    await peer.send("media.offer", scenario_id=scenario_id, user_id=user_id, **offer)
    if trickle:
        for cand in candidates:
            await peer.send("media.ice", **cand)
        await peer.send("media.ice", candidate="", sdp_mid="0", sdp_mline_index=0)
    answer = await peer.expect("answer")
    await client.accept(answer["data"])
    connected = await peer.expect("connected")
    return connected["data"]
