"""One aiortc RTCPeerConnection per call: ICE servers from settings, codec choice, offer → answer.

Why the care: left to itself aiortc uses a public Google STUN server (and waits up to 5 s for it),
offers PCMU too, and picks codecs in its own order. Here the ICE servers come only from settings
(empty = host candidates, right for a LAN and for tests), only PCMA and Opus are accepted, in the
order the client listed them, and the answer's SDP carries every gathered candidate (aiortc
gathers inside ``setLocalDescription``; it cannot trickle its own candidates).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp
from django.conf import settings

from media_pipeline import metrics

SUPPORTED = {"pcma": "audio/PCMA", "opus": "audio/opus"}
CODEC_RATES = {"pcma": 8000, "opus": 48000}


class NegotiationError(ValueError):
    """The offer cannot be answered (maps to ERR_WEBRTC_FAILED with the reason)."""


# --------------------------------------------------------------------------------------------
# ICE servers
# --------------------------------------------------------------------------------------------

def turn_credentials(*, now: float | None = None) -> tuple[str, str]:
    """Time-limited TURN REST credentials (coturn ``use-auth-secret``): user = expiry, pass = HMAC."""
    expiry = int((now or time.time()) + settings.TURN_CREDENTIAL_TTL_SECONDS)
    username = f"{expiry}:lingecho"
    digest = hmac.new(settings.TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers() -> list[RTCIceServer]:
    """Exactly the servers configured; an empty list means host candidates only (never Google STUN)."""
    servers: list[RTCIceServer] = []
    if settings.ICE_SERVERS_URLS:
        servers.append(RTCIceServer(urls=list(settings.ICE_SERVERS_URLS)))
    if settings.TURN_URLS and settings.TURN_SECRET:
        username, credential = turn_credentials()
        servers.append(RTCIceServer(urls=list(settings.TURN_URLS), username=username, credential=credential))
    return servers


# Every peer connection this process made and has not yet garbage-collected; /metrics reports the
# ones not closed, so a churn soak can see a call whose peer outlived it.
_peers: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()


def open_peer_connections() -> int:
    return sum(1 for pc in list(_peers) if pc.connectionState != "closed")


metrics.PEER_CONNECTIONS.set_function(open_peer_connections)


def new_peer_connection() -> RTCPeerConnection:
    # An explicit (possibly empty) list: leaving iceServers unset silently adds stun.l.google.com.
    pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=ice_servers()))
    _peers.add(pc)
    return pc


# --------------------------------------------------------------------------------------------
# SDP helpers
# --------------------------------------------------------------------------------------------

def offered_audio_codecs(sdp: str) -> list[list[str]]:
    """Per audio m-line, the supported codec names ("pcma"/"opus") in the client's order."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc raises assorted errors on malformed SDP
        raise NegotiationError(f"unreadable SDP: {exc}") from exc
    lines: list[list[str]] = []
    for media in description.media:
        if media.kind != "audio":
            continue
        names: list[str] = []
        for codec in media.rtp.codecs:
            for name, mime in SUPPORTED.items():
                if codec.mimeType.lower() == mime.lower() and name not in names:
                    names.append(name)
        lines.append(names)
    return lines


def offered_opus_dtx(sdp: str) -> bool:
    """Whether the client asked for Opus DTX (RFC 7587 ``usedtx=1`` on the first audio m-line's Opus).

    ``usedtx`` is the receiver's preference, so the buyer's track uses DTX only for a client that
    asked (the practice page does); without it every 20 ms frame is sent, as before.
    """
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # noqa: BLE001 - offered_audio_codecs has already turned it down
        return False
    for media in description.media:
        if media.kind == "audio":
            return any(
                codec.mimeType.lower() == SUPPORTED["opus"].lower() and str(codec.parameters.get("usedtx")) == "1"
                for codec in media.rtp.codecs
            )
    return False


def capabilities_for(names: list[str]) -> list[RTCRtpCodecCapability]:
    caps = RTCRtpSender.getCapabilities("audio").codecs
    chosen: list[RTCRtpCodecCapability] = []
    for name in names:
        chosen += [c for c in caps if c.mimeType.lower() == SUPPORTED[name].lower()]
    return chosen


def candidates_in_sdp(sdp: str) -> list[dict[str, Any]]:
    """The ``a=candidate`` lines of an SDP as protocol ``ice_candidate`` payloads."""
    found: list[dict[str, Any]] = []
    mline = -1
    mid: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=candidate:") and mline >= 0:
            found.append({"candidate": line[2:].strip(), "sdp_mid": mid, "sdp_mline_index": mline})
    return found


def parse_candidate(data: dict[str, Any]) -> Any | None:
    """A protocol ``ice_candidate`` payload -> RTCIceCandidate; None for end-of-candidates."""
    text = (data.get("candidate") or "").strip()
    if not text:
        return None
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:"):]
    try:
        candidate = candidate_from_sdp(text)
    except (ValueError, IndexError) as exc:
        raise NegotiationError(f"unreadable ICE candidate: {exc}") from exc
    candidate.sdpMid = data.get("sdp_mid")
    index = data.get("sdp_mline_index")
    candidate.sdpMLineIndex = int(index) if index is not None else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    return candidate


def with_candidates(sdp: str, candidates: list[str | dict[str, Any]]) -> str:
    """Put bundled ``offer.candidates`` into the SDP, so ICE starts with them (not after a trickle).

    The protocol's ``offer.candidates`` are candidate lines (``"candidate:1 1 UDP ..."``, as in the
    protocol's own example), which belong to the first m-line; ``ice_candidate``-shaped objects
    (with ``sdp_mid`` / ``sdp_mline_index``) are taken too."""
    if not candidates:
        return sdp
    candidates = [{"candidate": c} if isinstance(c, str) else c for c in candidates if isinstance(c, (str, dict))]
    lines = sdp.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    mline = -1
    mid: str | None = None

    def wanted(index: int, media_id: str | None) -> list[str]:
        rows = []
        for cand in candidates:
            text = (cand.get("candidate") or "").strip()
            if not text:
                continue
            if not text.startswith("a="):
                text = "a=" + text
            c_mid, c_index = cand.get("sdp_mid"), cand.get("sdp_mline_index")
            if (c_mid is not None and c_mid == media_id) or (c_mid is None and (c_index or 0) == index):
                rows.append(text)
        return rows

    for line in lines:
        if line.startswith("m="):
            if mline >= 0:
                out.extend(r for r in wanted(mline, mid) if r not in out)
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:].strip()
        if line:
            out.append(line)
    if mline >= 0:
        out.extend(r for r in wanted(mline, mid) if r not in out)
    return "\r\n".join(out) + "\r\n"


# --------------------------------------------------------------------------------------------
# negotiation
# --------------------------------------------------------------------------------------------

@dataclass
class Negotiated:
    sdp: str
    candidates: list[dict[str, Any]]
    codec: str  # "pcma" / "opus"
    sample_rate: int
    dtx: bool = False  # the client asked for Opus DTX (``offered_opus_dtx``)


async def answer_offer(
    pc: RTCPeerConnection, offer_sdp: str, candidates: list[dict[str, Any]], outbound: Any
) -> Negotiated:
    """Apply the client's offer on a fresh ``pc`` and produce the answer with its gathered candidates.

    ``outbound`` (a MediaStreamTrack) is sent on the first audio m-line; every other audio line
    is answered too, so every inbound track the client sends is received (and must be consumed).
    """
    per_line = offered_audio_codecs(offer_sdp)
    if not per_line:
        raise NegotiationError("the offer has no audio m-line")
    if not any(per_line):
        raise NegotiationError("the offer has no supported audio codec (pcma, opus)")
    # One transceiver per audio m-line, created before the offer is applied so its codec
    # preferences (the client's own order, PCMA/Opus only) are used when the offer is matched.
    transceivers = [t for t in pc.getTransceivers() if t.kind == "audio"]
    for index, names in enumerate(per_line):
        if index >= len(transceivers):
            transceivers.append(pc.addTransceiver(outbound if index == 0 else "audio", direction="sendrecv"))
        if names:
            transceivers[index].setCodecPreferences(capabilities_for(names))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=with_candidates(offer_sdp, candidates), type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except NegotiationError:
        raise
    except Exception as exc:  # noqa: BLE001 - aiortc raises InvalidAccessError/OperationError/ValueError
        raise NegotiationError(f"cannot answer the offer: {exc}") from exc
    local = pc.localDescription.sdp
    codec = negotiated_codec(pc)
    return Negotiated(sdp=local, candidates=candidates_in_sdp(local), codec=codec, sample_rate=CODEC_RATES[codec],
                      dtx=codec == "opus" and offered_opus_dtx(offer_sdp))


def negotiated_codec(pc: RTCPeerConnection) -> str:
    for transceiver in pc.getTransceivers():
        for codec in getattr(transceiver, "_codecs", []) or []:
            for name, mime in SUPPORTED.items():
                if codec.mimeType.lower() == mime.lower():
                    return name
    return "pcma"
