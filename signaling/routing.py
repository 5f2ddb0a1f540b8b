"""WebSocket routes: the LingEcho protocol and the Socket.IO audio-chunk fallback.

Each transport adds its own route line here when its consumer lands.
"""

from django.urls import re_path  # noqa: F401  (used by the route lines below)

from signaling.auth import RefuseAnonymous
from signaling.protocol import CloseCode
from signaling.socketio_consumer import SocketIOConsumer
from signaling.voice_consumer import VoiceConsumer

websocket_urlpatterns: list = [
    # The LingEcho protocol authenticates at the handshake; Socket.IO may authenticate in its CONNECT packet.
    re_path(r"^ws/voice/?$", RefuseAnonymous(VoiceConsumer.as_asgi(), close_code=CloseCode.UNAUTHENTICATED)),
    re_path(r"^socket\.io/?$", SocketIOConsumer.as_asgi()),
]
