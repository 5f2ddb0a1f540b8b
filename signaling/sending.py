"""Sending on a socket the client has just closed is not an error of the application.

A channel-layer message (a transcript, a buyer reply, a media event) can arrive for a consumer in
the instant between the client's close and daphne's ``websocket.disconnect`` reaching it. daphne's
WebSocket protocol then raises ``autobahn.exception.Disconnected`` from ``send``; uncaught, it ends
the consumer with "Exception inside application" and a traceback, before its disconnect handling
ran (the churn soak hit it about once per hundred dropped calls). The send is dropped instead: the
disconnect that follows does the cleaning up.
"""

from __future__ import annotations

import logging

try:  # daphne's WebSocket stack; other ASGI servers drop sends to a closed socket themselves
    from autobahn.exception import Disconnected
except ImportError:  # pragma: no cover - daphne is a dependency
    class Disconnected(Exception):  # type: ignore[no-redef]
        """Never raised: stands in when autobahn is absent."""

logger = logging.getLogger(__name__)


class DropSendsAfterClose:
    """Mixin for a Channels WebSocket consumer (put it before ``AsyncWebsocketConsumer``)."""

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:
            logger.debug("send dropped: the client has closed the socket")
