"""The trainee's audio decoded inline on the loop (media_pipeline.webrtc.inline_decode).

Against aiortc's own path (its decoder, 48 kHz stereo, then the same 16 kHz conversion) on real
Opus and PCMA packets of eSpeak speech, and through a real aiortc peer connection pair, where the
receiver's decoder queue is replaced as the server does it.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import AudioFrame

from media_pipeline.audio import FrameConverter, rms
from media_pipeline.webrtc import inline_decode
from media_pipeline.webrtc.inline_decode import InlineDecoder, install
from tests.audio_fixtures import silence, speak
from tests.media_pipeline.voice_client import SpeechTrack

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
PCMA = RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, channels=1, payloadType=8)


def encoded(codec: RTCRtpCodecParameters, x: np.ndarray) -> list[JitterFrame]:
    """``x`` (float32 at the codec's rate) in 20 ms frames, encoded by aiortc's encoder."""
    encoder = get_encoder(codec)
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)
    step = codec.clockRate // 50
    out: list[JitterFrame] = []
    for n, start in enumerate(range(0, len(pcm) - step + 1, step)):
        frame = AudioFrame.from_ndarray(pcm[start : start + step].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = codec.clockRate
        frame.pts = start
        payloads, _ = encoder.encode(frame)
        out.extend(JitterFrame(data=p, timestamp=n * step) for p in payloads)
    return out


def aiortcs_own(codec: RTCRtpCodecParameters, frames: list[JitterFrame]) -> np.ndarray:
    decoder, convert = get_decoder(codec), FrameConverter(16000)
    return np.concatenate([convert.convert(f) for jf in frames for f in decoder.decode(jf)])


def inline(codec: RTCRtpCodecParameters, frames: list[JitterFrame]) -> tuple[np.ndarray, InlineDecoder]:
    heard: list[np.ndarray] = []
    decoder = InlineDecoder(16000, heard.append, lambda: None)
    for jf in frames:
        decoder.put((codec, jf))
    return np.concatenate(heard), decoder


@pytest.mark.parametrize(("codec", "libopus"), [(OPUS, True), (OPUS, False), (PCMA, True)],
                         ids=["opus-libopus-16k", "opus-pyav-fallback", "pcma"])
def test_it_hears_what_aiortcs_own_decoder_hears(codec, libopus, monkeypatch):
    if not libopus:
        monkeypatch.setattr(inline_decode, "_libopus", lambda: None)
    x = np.concatenate([speak("Our finance team closes the books in three days.", rate=codec.clockRate),
                        silence(200, codec.clockRate)])
    frames = encoded(codec, x)
    ours, decoder = inline(codec, frames)
    theirs = aiortcs_own(codec, frames)
    if codec is OPUS:  # straight to 16 kHz mono with libopus (PyAV's wheel carries it), else through PyAV
        assert type(decoder._decoder).__name__ == ("_Opus16k" if libopus else "_MonoOpus")
    assert decoder.frames == len(frames) and decoder.failures == 0
    assert abs(len(ours) - len(theirs)) <= 32  # the same timeline, 20 ms a frame at 16 kHz
    n = min(len(ours), len(theirs))
    assert abs(len(ours) - len(x) * 16000 // codec.clockRate) <= 400
    # Mono decoded directly vs stereo averaged: the same voice, sample for sample.
    assert np.corrcoef(ours[:n], theirs[:n])[0, 1] > 0.99
    assert rms(ours) == pytest.approx(rms(theirs), rel=0.05)


def test_a_second_track_is_not_decoded_and_the_end_is_reported_once_and_frees_the_thread():
    ended: list[bool] = []
    decoder = InlineDecoder(16000, None, lambda: ended.append(True))
    decoder.put((OPUS, encoded(OPUS, speak("Hello.", rate=48000))[0]))
    assert decoder.frames == 0
    decoder.put(None)
    assert ended == [True]
    assert decoder.get() is None  # aiortc's parked decoder thread returns and ends


def test_bad_frames_and_a_failing_callback_lose_one_frame_not_the_call(caplog):
    calls: list[int] = []

    def explode(x: np.ndarray) -> None:
        calls.append(x.size)
        raise RuntimeError("boom")

    decoder = InlineDecoder(16000, explode, lambda: None)
    good = encoded(OPUS, speak("Hello there.", rate=48000))
    with caplog.at_level(logging.ERROR, logger="media_pipeline.webrtc.inline_decode"):
        decoder.put((OPUS, JitterFrame(data=b"\xff" * 3, timestamp=0)))  # not Opus
        decoder.put((OPUS, good[0]))
        decoder.put((OPUS, good[1]))
    assert decoder.failures == 1
    assert len(calls) == 2 and calls[1] == 320  # the first frame is short by the resampler's delay
    assert "callback failed" in caplog.text


def test_detached_it_hears_nothing_more():
    heard: list[np.ndarray] = []
    ended: list[bool] = []
    decoder = InlineDecoder(16000, heard.append, lambda: ended.append(True))
    decoder.detach()
    decoder.put((OPUS, encoded(OPUS, speak("Hello.", rate=48000))[0]))
    decoder.put(None)
    assert heard == [] and ended == []


async def test_through_a_real_peer_connection_every_frame_is_decoded_inline():
    """A real aiortc pair on this host: the answerer's receiver gets the decoder in the ``track``
    event, as the server does; the track's own queue stays empty and the speech arrives."""
    sender, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    track = SpeechTrack(48000)
    sender.addTrack(track)
    heard: list[np.ndarray] = []
    ended = asyncio.Event()
    installed: list[tuple[bool, object]] = []

    @receiver_pc.on("track")
    def on_track(remote) -> None:
        receiver = next(t.receiver for t in receiver_pc.getTransceivers() if t.receiver.track is remote)
        decoder = InlineDecoder(16000, heard.append, ended.set)
        installed.append((install(receiver, decoder), remote))

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver_pc.setRemoteDescription(sender.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender.setRemoteDescription(receiver_pc.localDescription)
        phrase = speak("We can start the pilot next week.", rate=48000)
        track.play(np.concatenate([phrase, silence(400, 48000)]))
        await asyncio.wait_for(track.done.wait(), 15)
        await asyncio.sleep(0.3)
        assert installed and installed[0][0] is True
        remote = installed[0][1]
        assert remote._queue.qsize() == 0  # nothing went through aiortc's thread and queue
        x = np.concatenate(heard)
        assert len(x) >= len(phrase) // 3  # 16 kHz: the whole phrase arrived
        assert rms(x) > 0.02
    finally:
        await sender.close()
        await receiver_pc.close()
    await asyncio.wait_for(ended.wait(), 5)  # the receiver stopped: the end is reported


def test_install_refuses_a_receiver_that_is_not_aiortcs_known_shape():
    class Other:
        pass

    assert install(Other(), InlineDecoder(16000, None, lambda: None)) is False
