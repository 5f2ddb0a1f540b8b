"""WebRTC through Debian's coturn: a relay-only client (``iceTransportPolicy: relay``) talks to a live
server whose ICE settings point at a ``turnserver`` on loopback with ``use-auth-secret``.

What it proves: the TURN REST credentials the server hands out in ``init.ice_servers`` are accepted
by coturn, a call whose every packet goes through the relay connects and carries audio both ways
(eSpeak speech in, a transcript and the buyer's voice back), and wrong or expired credentials end
in ``ERR_WEBRTC_FAILED`` instead of a call that hangs. The server's ICE timeout is lowered
(``ICE_CONNECT_TIMEOUT_SECONDS``) so the failing case takes seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
)

from tests.deploy.voice import talk
from tests.live_server import free_port
from tests.media_pipeline.live import LiveStack, WsPeer, ws_connect_media
from tests.media_pipeline.voice_client import MIMES, VoiceClient

pytestmark = pytest.mark.slow

ICE_TIMEOUT_SECONDS = 4
REALM = "lingecho.test"


class Coturn:
    """``turnserver`` in the foreground on 127.0.0.1, TURN REST secret, no config file, no root paths."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("turnserver") or "/usr/bin/turnserver"
        if not Path(binary).exists():
            pytest.skip("coturn's turnserver is not installed (Debian: apt-get install coturn; .ci/run does it)")
        self.port = free_port()
        self.secret = secrets.token_urlsafe(24)
        self.log = folder / "turnserver.log"
        self.proc = subprocess.Popen(
            [binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={self.port}",
             "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={REALM}",
             # Both ends of this call live on loopback; a production coturn refuses loopback peers.
             "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
             f"--pidfile={folder / 'turnserver.pid'}", f"--userdb={folder / 'turndb'}",
             "--log-file=stdout", "--simple-log", "--verbose"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:  # coturn listens on TCP and UDP on the same port; TCP tells us it is up
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                assert time.monotonic() < deadline, "turnserver did not start"
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def credentials(self, *, expires_in: int) -> dict[str, str]:
        """TURN REST credentials as coturn checks them (independent of the server's own code)."""
        username = f"{int(time.time()) + expires_in}:trainee"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return {"username": username, "credential": base64.b64encode(digest).decode()}

    def allocations_for(self, username: str) -> int:
        """Successful ALLOCATE requests coturn logged for ``username`` (``--verbose``)."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if f"user <{username}>" in line and "ALLOCATE processed, success" in line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def turn(tmp_path_factory):
    server = Coturn(tmp_path_factory.mktemp("coturn"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(turn, tmp_path_factory):
    live = LiveStack(tmp_path_factory.mktemp("turn-stack"))
    live.env.update({"TURN_URLS": turn.url, "TURN_SECRET": turn.secret, "TURN_CREDENTIAL_TTL_SECONDS": "600",
                     "ICE_CONNECT_TIMEOUT_SECONDS": str(ICE_TIMEOUT_SECONDS)})
    live.start()
    yield live
    live.stop()


class InitPeer(WsPeer):
    """WsPeer that keeps the ``init`` data (its ``ice_servers`` are what this test is about)."""

    init: dict[str, Any]

    async def start(self) -> InitPeer:
        self.ws = await websockets.connect(self.url, max_size=2**22, open_timeout=20)
        init = json.loads(await self.ws.recv())
        assert init["type"] == "init", init
        self.init = init["data"]
        self.session_id = init["session_id"]
        self._reader = asyncio.ensure_future(self._read())
        return self


class RelayOnlyClient(VoiceClient):
    """The voice client with the page's ICE servers and ``iceTransportPolicy: "relay"``: it gathers
    only relayed candidates and pairs only them, as a browser behind a closed firewall would."""

    def __init__(self, ice_servers: list[dict[str, Any]], codec: str = "pcma") -> None:
        super().__init__(codec)
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(**server) for server in ice_servers],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        ))
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == MIMES[codec]])

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._consumers.append(asyncio.ensure_future(self._consume(track)))

    def offered_candidate_types(self) -> set[str]:
        sdp = self.pc.localDescription.sdp
        return {line.split(" typ ")[1].split()[0] for line in sdp.splitlines() if line.startswith("a=candidate:")}

    def selected_local_candidate_type(self) -> str:
        ice = self.pc.getTransceivers()[0].sender.transport.transport
        pair = ice._connection._nominated.get(1)  # aioice's nominated pair for the RTP component
        return pair.local_candidate.type if pair else ""


async def test_a_relay_only_call_connects_through_coturn_and_carries_audio_both_ways(stack, turn):
    peer = await InitPeer(stack, stack.scenario_id()).start()
    servers = peer.init["ice_servers"]
    assert [s["urls"] for s in servers] == [[turn.url]]
    username, credential = servers[0]["username"], servers[0]["credential"]
    expiry = int(username.split(":", 1)[0])
    assert time.time() < expiry <= time.time() + 600  # TURN_CREDENTIAL_TTL_SECONDS
    expected = hmac.new(turn.secret.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected
    client = RelayOnlyClient(servers)
    try:
        connected = await ws_connect_media(peer, client)
        assert connected["connection_state"] == "connected"
        assert client.offered_candidate_types() == {"relay"}
        assert client.selected_local_candidate_type() == "relay"
        await talk(peer, client)  # a transcript of our speech, then the buyer's voice heard
        assert turn.allocations_for(username) >= 1
    finally:
        await peer.close()
        await client.close()


@pytest.mark.parametrize("case", ["wrong_secret", "expired"])
async def test_bad_turn_credentials_end_in_err_webrtc_failed(stack, turn, case):
    peer = await InitPeer(stack, stack.scenario_id()).start()
    good = peer.init["ice_servers"][0]
    if case == "wrong_secret":
        bad = {**good, "credential": base64.b64encode(b"x" * 20).decode()}
    else:
        bad = {"urls": good["urls"], **turn.credentials(expires_in=-60)}
    client = RelayOnlyClient([bad])
    try:
        offer, _ = await client.offer()
        assert client.offered_candidate_types() == set()  # coturn refused the allocation
        await peer.send("offer", offer)
        with contextlib.suppress(TimeoutError):
            await peer.expect("answer", timeout=10)
        error = await peer.expect("error", timeout=ICE_TIMEOUT_SECONDS + 20, code="ERR_WEBRTC_FAILED")
        assert error["data"]["details"]["error_type"] in ("ice_timeout", "peer_failed"), error
        assert not peer.of_type("connected")
    finally:
        await peer.close()
        await client.close()
