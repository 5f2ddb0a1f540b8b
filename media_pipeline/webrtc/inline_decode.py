"""The trainee's audio decoded where it arrives, on the event loop, and handed over as 16 kHz float32.

aiortc gives every receiver a decoder thread: each complete RTP frame goes through a
``queue.Queue`` to that thread, is decoded there (Opus as 48 kHz stereo), and comes back through
``asyncio.run_coroutine_threadsafe`` into the track's queue, where the reader awaits it. For a
20 ms audio frame that is two thread hand-overs, a task, a future and a self-pipe wake-up of the
loop, fifty times a second per call; the Opus decode itself is ~45 µs of C. Profiled at 8 idle
calls, the decoder threads were 16 % of the server's CPU and the hand-over a good part of the
loop's.

:func:`install` puts a :class:`InlineDecoder` in place of that queue on one receiver, before the
receiver starts: aiortc's ``_handle_rtp_packet`` then calls :meth:`InlineDecoder.put` with each
frame on the loop, which decodes it at once (Opus straight to 16 kHz mono with libopus,
PCMA and the rest with aiortc's decoder and one resampling) and calls ``on_pcm`` with 16 kHz
float32 samples. The decoder thread aiortc still starts parks in
:meth:`InlineDecoder.get` until the receiver stops. Only the documented shape of aiortc's
receiver is relied on (its queue attribute, and ``put``/``get`` with ``(codec, frame)`` or
``None``); :func:`install` checks it and returns ``False`` when it differs, and the caller then
reads the track as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from media_pipeline.audio import FrameConverter, pcm16_to_float32

log = logging.getLogger(__name__)

_QUEUE_ATTRIBUTE = "_RTCRtpReceiver__decoder_queue"  # aiortc 1.x: where the receiver queues frames
_THREAD_ATTRIBUTE = "_RTCRtpReceiver__decoder_thread"  # None until the receiver starts
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus decodes to


@functools.cache
def _libopus() -> ctypes.CDLL | None:
    """libopus itself: the system's, else the copy PyAV's wheel bundles (aiortc needs PyAV, and
    PyAV's Opus decoder is that library); None if neither loads."""
    candidates = [ctypes.util.find_library("opus")]
    candidates += sorted(glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libopus*.so*")))
    for path in filter(None, candidates):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                    ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


class _Opus16k:
    """libopus decoding straight to mono at the ASR's rate: no 48 kHz stereo frame, no resampler,
    no PyAV frame objects (on the loop, per frame, those were most of the cost).

    It decodes to int16, as PyAV's decoder gives it, so whatever a packet holds the samples stay
    within full scale (libopus's float output is not clipped).
    """

    def __init__(self, lib: ctypes.CDLL, rate: int) -> None:
        error = ctypes.c_int(0)
        self._lib = lib
        self._state = lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        if error.value != 0 or not self._state:
            raise ValueError(f"opus_decoder_create failed ({error.value})")
        self._out = np.empty(rate * 120 // 1000, dtype=np.int16)  # Opus's longest packet: 120 ms
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))

    def decode(self, encoded: Any) -> list[np.ndarray]:
        n = self._lib.opus_decode(self._state, encoded.data, len(encoded.data), self._out_ptr, self._out.size, 0)
        if n < 0:
            raise ValueError(f"opus_decode failed ({n})")
        return [pcm16_to_float32(self._out[:n])]

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_decoder_destroy(state)


class _MonoOpus:
    """libopus through PyAV, decoding to mono 48 kHz (then resampled): when libopus cannot be loaded."""

    def __init__(self, rate: int) -> None:
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = 48000
        self._convert = FrameConverter(rate)

    def decode(self, encoded: Any) -> list[np.ndarray]:
        return [self._convert.convert(frame) for frame in self._codec.decode(av.Packet(encoded.data))]


class _AiortcDecoder:
    """Any other codec aiortc knows (PCMA, PCMU, G.722), with aiortc's own decoder."""

    def __init__(self, codec: Any, rate: int) -> None:
        from aiortc.codecs import get_decoder

        self._decoder = get_decoder(codec)
        self._convert = FrameConverter(rate)

    def decode(self, encoded: Any) -> list[np.ndarray]:
        return [self._convert.convert(frame) for frame in self._decoder.decode(encoded)]


class InlineDecoder:
    """Stands in for one receiver's decoder queue (see the module docstring).

    ``on_pcm(samples)`` gets each decoded frame as float32 mono at ``rate``; ``None`` drops frames
    undecoded (a second audio track: read, never heard). ``on_end()``, if given, is called once
    when the receiver stops. Both run on the event loop, inside aiortc's packet handler, so they must be
    quick and must not raise; an exception is logged and the frame dropped, the call goes on.
    """

    def __init__(self, rate: int, on_pcm: Callable[[np.ndarray], None] | None,
                 on_end: Callable[[], None] | None) -> None:
        self.rate = rate
        self.on_pcm = on_pcm
        self.on_end = on_end
        self._stopped = threading.Event()
        self._decoder: Any = None
        self._codec_name: str | None = None
        self.frames = 0
        self.failures = 0

    def detach(self) -> None:
        """Hear nothing more from this receiver (its peer was replaced)."""
        self.on_pcm = None
        self.on_end = None

    # --- the queue.Queue calls aiortc makes -----------------------------------------------------
    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._stopped.set()
            if self.on_end is not None:
                self._call(self.on_end)
            return
        if self.on_pcm is None:
            return
        codec, encoded = item
        try:
            frames = self._decode(codec, encoded)
        except (av.FFmpegError, ValueError) as exc:
            self.failures += 1
            log.debug("dropped an undecodable %s frame: %s", getattr(codec, "name", "?"), exc)
            return
        for samples in frames:
            self.frames += 1
            self._call(self.on_pcm, samples)

    def get(self) -> None:
        """aiortc's decoder thread waits here, idle, until the receiver stops."""
        self._stopped.wait()
        return None

    # --- internals -----------------------------------------------------------------------------
    def _decode(self, codec: Any, encoded: Any) -> list[np.ndarray]:
        name = str(getattr(codec, "name", "")).lower()
        if name != self._codec_name:
            self._decoder = self._new_decoder(name, codec)
            self._codec_name = name
        return self._decoder.decode(encoded)

    def _new_decoder(self, name: str, codec: Any) -> Any:
        if name != "opus":
            return _AiortcDecoder(codec, self.rate)
        lib = _libopus()
        if lib is None or self.rate not in _OPUS_RATES:
            return _MonoOpus(self.rate)
        return _Opus16k(lib, self.rate)

    @staticmethod
    def _call(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - inside aiortc's packet handler: never break the transport
            log.exception("the inbound audio callback failed; the frame is dropped")


def install(receiver: Any, decoder: InlineDecoder) -> bool:
    """Put ``decoder`` in place of ``receiver``'s decoder queue; False if aiortc's shape is not the known one.

    Must run before the receiver starts (aiortc hands the queue to its thread then): in the
    ``track`` event of ``setRemoteDescription``, which precedes the connection.
    """
    queue = getattr(receiver, _QUEUE_ATTRIBUTE, None)
    if queue is None or not hasattr(queue, "put") or getattr(receiver, _THREAD_ATTRIBUTE, "missing") is not None:
        return False
    setattr(receiver, _QUEUE_ATTRIBUTE, decoder)
    return True
