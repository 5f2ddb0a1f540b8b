"""WebSocket routes: the LingEcho protocol and the Socket.IO audio-chunk fallback.

Each transport adds its own route line here when its consumer lands.
"""

from django.urls import re_path  # noqa: F401  (used by the route lines below)

from signaling.socketio_consumer import SocketIOConsumer
from signaling.voice_consumer import VoiceConsumer

websocket_urlpatterns: list = [
    re_path(r"^ws/voice/?$", VoiceConsumer.as_asgi()),
    re_path(r"^socket\.io/?$", SocketIOConsumer.as_asgi()),
]
