"""Incremental decode of a browser's MediaRecorder stream (WebM/Opus), or raw PCM16, to 16 kHz float32.

MediaRecorder with a timeslice hands out one continuous WebM file in pieces: only the first
piece has the EBML header and the track description, the Segment and Clusters have "unknown"
sizes (the recorder cannot know them in advance), and piece boundaries fall anywhere, even
inside a block. libavformat's demuxer wants a seekable file and treats the end of what it has
as the end of the stream, so it cannot be fed piece by piece. Hence the small streaming EBML
reader below: it keeps only the bytes of the element it is in the middle of, hands every Opus
frame to PyAV's Opus decoder (one ``CodecContext`` per stream, so decoder state carries across
pieces) and resamples to what VAD and ASR take.

Damage is reported, never fatal: an unknown element or an impossible size makes the reader
skip ahead to the next Cluster (or a new EBML header, when the client restarted its recorder),
and an Opus frame the decoder rejects is dropped. Each ``feed`` returns the audio it could
decode plus a human-readable error when something was thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from media_pipeline.audio import ASR_RATE, Resampler, pcm16_to_float32
from media_pipeline.contract import CHUNK_AUDIO_FORMATS

# --- EBML ids (Matroska spec) --------------------------------------------------------------------
EBML = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067
CLUSTER = 0x1F43B675
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
AUDIO = 0xE1
SAMPLING_FREQUENCY = 0xB5
CHANNELS = 0x9F
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
SIMPLE_BLOCK = 0xA3

_ENTER = {SEGMENT, CLUSTER, BLOCK_GROUP}  # containers read as a flat stream (sizes may be unknown)
_NEED = {EBML, TRACKS, SIMPLE_BLOCK, BLOCK}  # elements whose payload we parse
# Everything else that may legitimately appear in a WebM segment, cluster or block group: skipped.
_SKIP = {
    0x114D9B74, 0x1549A966, 0x1C53BB6B, 0x1043A770, 0x1254C367, 0x1941A469,  # SeekHead Info Cues Chapters Tags Att.
    0xEC, 0xBF, 0xE7, 0xA7, 0xAB, 0x5854,  # Void CRC-32 Timecode Position PrevSize SilentTracks
    0x9B, 0xFB, 0x75A2, 0x75A1, 0xA2, 0xA4, 0xFA, 0x8E,  # BlockDuration ReferenceBlock ... Slices
}
_KNOWN = _ENTER | _NEED | _SKIP
_UNKNOWN_SIZE = -1
_RESYNC_IDS = (CLUSTER.to_bytes(4, "big"), EBML.to_bytes(4, "big"))
MAX_ELEMENT_BYTES = 1 << 20  # a block or a track list is never near this; a bigger size is damage


class AudioDecodeError(ValueError):
    """Audio that cannot be decoded at all (maps to ERR_AUDIO_ENCODE_FAILED)."""


@dataclass
class Decoded:
    """What one piece of the stream gave: 16 kHz mono float32, and what was lost, if anything."""

    audio: np.ndarray
    error: str | None = None


def _vint(buf: bytes | bytearray, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-length integer at ``pos``; None if more bytes are needed."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first == 0:
        raise AudioDecodeError("invalid EBML variable-length integer (zero first byte)")
    length = 9 - first.bit_length()
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = _UNKNOWN_SIZE
    return value, length


def _children(payload: bytes) -> list[tuple[int, bytes]]:
    """Direct children of a fully buffered master element (sizes must be known)."""
    out, pos = [], 0
    while pos < len(payload):
        ident = _vint(payload, pos, keep_marker=True)
        size = _vint(payload, pos + ident[1], keep_marker=False) if ident else None
        if ident is None or size is None or size[0] < 0:
            raise AudioDecodeError("truncated or unsized element inside a track description")
        start = pos + ident[1] + size[1]
        out.append((ident[0], payload[start : start + size[0]]))
        pos = start + size[0]
    return out


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


@dataclass
class OpusTrack:
    number: int
    codec_private: bytes
    sample_rate: int
    channels: int


def _audio_track(tracks_payload: bytes) -> OpusTrack:
    for ident, entry in _children(tracks_payload):
        if ident != TRACK_ENTRY:
            continue
        fields = dict(_children(entry))
        codec = fields.get(CODEC_ID, b"").decode("ascii", "replace").rstrip("\0")
        if _uint(fields.get(TRACK_TYPE, b"")) not in (0, 2) or not codec.startswith("A_"):
            continue  # not audio (a video track from a camera recorder)
        if codec != "A_OPUS":
            raise AudioDecodeError(
                f"unsupported audio codec {codec!r} (MediaRecorder must record audio/webm;codecs=opus)"
            )
        audio = dict(_children(fields.get(AUDIO, b"")))
        freq = audio.get(SAMPLING_FREQUENCY, b"")
        rate = int(np.frombuffer(freq, ">f8" if len(freq) == 8 else ">f4")[0]) if len(freq) in (4, 8) else 48000
        return OpusTrack(
            number=_uint(fields.get(TRACK_NUMBER, b"\x01")),
            codec_private=fields.get(CODEC_PRIVATE, b""),
            sample_rate=rate or 48000,
            channels=_uint(audio.get(CHANNELS, b"\x01")) or 1,
        )
    raise AudioDecodeError("the WebM stream has no audio track")


class WebMOpusStream:
    """Feed the pieces of one MediaRecorder WebM/Opus stream in order; get 16 kHz float32 back."""

    format = "webm-opus"

    def __init__(self, *, max_element_bytes: int = MAX_ELEMENT_BYTES) -> None:
        self.max_element_bytes = max_element_bytes
        self._buf = bytearray()
        self._skip = 0
        self._resync = False
        self._started = False
        self._track: OpusTrack | None = None
        self._codec: av.AudioCodecContext | None = None
        self._resampler = Resampler(48000, ASR_RATE)
        self.frames_decoded = 0
        self.frames_dropped = 0
        self.restarts = 0

    @property
    def track(self) -> OpusTrack | None:
        return self._track

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Decoded:
        self._buf += data
        pieces: list[np.ndarray] = []
        errors: list[str] = []
        while True:
            try:
                progressed = self._step(pieces, errors)
            except AudioDecodeError as exc:
                errors.append(str(exc))
                if not self._started:
                    # Not even a header: nothing of this stream can be decoded. Forget it all.
                    self._buf.clear()
                    self._skip = 0
                    break
                self._resync = True
                continue
            if not progressed:
                break
        # One resampler call per feed, not per 20 ms frame: a flush of several pieces is ~50 frames,
        # and each libswresample call costs a frame object, a copy and a Python round trip.
        audio = self._resampler.process(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.float32)
        return Decoded(audio, "; ".join(dict.fromkeys(errors)) or None)

    def finish(self) -> Decoded:
        """End of the stream: drain the resampler; bytes left inside an element were truncated."""
        error = None
        if self._buf and not self._resync:
            error = f"the stream ended inside an element ({len(self._buf)} bytes dropped)"
        self._buf.clear()
        return Decoded(self._resampler.flush(), error)

    # --- reader --------------------------------------------------------------------------------
    def _step(self, pieces: list[np.ndarray], errors: list[str]) -> bool:
        """Consume one element header or payload; False when more bytes are needed."""
        buf = self._buf
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            return n > 0
        if self._resync:
            return self._find_sync()
        if not buf:
            return False
        ident = _vint(buf, 0, keep_marker=True)
        if ident is None:
            return False
        size = _vint(buf, ident[1], keep_marker=False)
        if size is None:
            return False
        element, (length, header) = ident[0], (size[0], ident[1] + size[1])
        if not self._started and element != EBML:
            raise AudioDecodeError(
                "not a WebM stream: the first chunk must start with the EBML header "
                f"(got bytes {bytes(buf[:4]).hex()}); send the recorder's first chunk first"
            )
        if element not in _KNOWN:
            raise AudioDecodeError(f"unexpected element 0x{element:X} in the WebM stream")
        if element in _ENTER:
            del buf[:header]
            return True
        if length == _UNKNOWN_SIZE or length > self.max_element_bytes:
            raise AudioDecodeError(f"element 0x{element:X} has an impossible size")
        if element not in _NEED:
            del buf[:header]
            self._skip = length
            return True
        if len(buf) < header + length:
            return False
        payload = bytes(buf[header : header + length])
        del buf[: header + length]
        if element == EBML:
            self._begin(payload)
        elif element == TRACKS:
            self._set_track(_audio_track(payload))
        else:
            self._block(payload, pieces, errors)
        return True

    def _find_sync(self) -> bool:
        buf = self._buf
        found = [i for i in (buf.find(marker) for marker in _RESYNC_IDS) if i >= 0]
        if not found:
            keep = 3  # a marker may be split across pieces
            if len(buf) > keep:
                del buf[: len(buf) - keep]
            return False
        del buf[: min(found)]
        self._resync = False
        return True

    def _begin(self, payload: bytes) -> None:
        doc = dict(_children(payload)).get(DOC_TYPE, b"webm").rstrip(b"\0")
        if doc not in (b"webm", b"matroska"):
            raise AudioDecodeError(f"not a WebM stream (DocType {doc!r})")
        if self._started:
            self.restarts += 1  # the recorder was restarted: a new stream in the same session
        self._started = True
        self._track = None
        self._codec = None

    def _set_track(self, track: OpusTrack) -> None:
        codec = av.CodecContext.create("opus", "r")
        if track.codec_private:
            codec.extradata = track.codec_private
        codec.sample_rate = 48000
        codec.layout = "stereo" if track.channels == 2 else "mono"
        self._track, self._codec = track, codec

    def _block(self, payload: bytes, pieces: list[np.ndarray], errors: list[str]) -> None:
        number = _vint(payload, 0, keep_marker=False)
        if number is None or len(payload) < number[1] + 3:
            raise AudioDecodeError("truncated block")
        if self._track is None or self._codec is None:
            raise AudioDecodeError("audio block before the track description")
        if number[0] != self._track.number:
            return
        flags = payload[number[1] + 2]
        if flags & 0x06:
            raise AudioDecodeError("laced blocks are not supported")
        try:
            frames = self._codec.decode(av.Packet(payload[number[1] + 3 :]))
        except (av.error.FFmpegError, ValueError) as exc:
            self.frames_dropped += 1
            errors.append(f"an Opus frame could not be decoded ({exc.__class__.__name__})")
            return
        for frame in frames:
            pieces.append(_mono48(frame))
            self.frames_decoded += 1


def _mono48(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as mono float32 at the decoder's rate (48 kHz; resampled per feed)."""
    if frame.format.name in ("flt", "fltp") and len(frame.layout.channels) == 1:
        # The usual case (a mono recorder, FFmpeg's float decoder): read the plane, skip to_ndarray's vstack.
        return np.frombuffer(frame.planes[0], dtype=np.float32, count=frame.samples).copy()
    samples = frame.to_ndarray()
    mono = samples.mean(axis=0) if samples.ndim == 2 and samples.shape[0] > 1 else samples.reshape(-1)
    if frame.format.name in ("s16", "s16p"):
        mono = mono / 32768.0
    return np.asarray(mono, dtype=np.float32)


class PCM16Stream:
    """Raw little-endian 16-bit mono PCM at ``sample_rate``; an odd byte waits for its partner."""

    format = "pcm16"

    def __init__(self, sample_rate: int = ASR_RATE) -> None:
        if not 8000 <= sample_rate <= 48000:
            raise AudioDecodeError(f"unsupported PCM16 sample rate {sample_rate}")
        self.sample_rate = sample_rate
        self._carry = b""
        self._resampler = Resampler(sample_rate, ASR_RATE)

    @property
    def buffered_bytes(self) -> int:
        return len(self._carry)

    def feed(self, data: bytes) -> Decoded:
        data = self._carry + data
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        if not cut:
            return Decoded(np.zeros(0, dtype=np.float32))
        return Decoded(self._resampler.process(pcm16_to_float32(data[:cut])))

    def finish(self) -> Decoded:
        error = "the stream ended in the middle of a sample (1 byte dropped)" if self._carry else None
        self._carry = b""
        return Decoded(self._resampler.flush(), error)


AudioStream = WebMOpusStream | PCM16Stream

FORMATS = CHUNK_AUDIO_FORMATS


def open_stream(audio_format: str, *, sample_rate: int = ASR_RATE) -> AudioStream:
    """The decoder for an ``audioConfig.format``: ``webm-opus`` (default) or ``pcm16``."""
    if audio_format == "pcm16":
        return PCM16Stream(sample_rate)
    if audio_format in ("webm-opus", "webm", "audio/webm", "audio/webm;codecs=opus"):
        return WebMOpusStream()
    raise AudioDecodeError(f"unsupported audio format {audio_format!r}; use one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "AudioDecodeError", "AudioStream", "Decoded", "PCM16Stream", "WebMOpusStream", "open_stream"]
