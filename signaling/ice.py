"""ICE servers for ``init.data.ice_servers``.

STUN/TURN URLs come from settings (never a public server by default). When ``TURN_SECRET`` is
set, TURN entries get time-limited credentials per the TURN REST API convention that coturn's
``use-auth-secret`` implements: username ``"<expiry unix seconds>:<user>"`` and credential
``base64(HMAC-SHA1(secret, username))``, so no long-lived TURN password reaches a browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from django.conf import settings


def turn_credentials(*, user: str, secret: str, ttl_seconds: int, now: float | None = None) -> dict[str, str]:
    expiry = int((time.time() if now is None else now) + ttl_seconds)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode("ascii")}


def ice_servers(*, user: str) -> list[dict[str, object]]:
    """RTCIceServer dicts (``urls``, plus ``username``/``credential`` for TURN when a secret is set)."""
    servers: list[dict[str, object]] = []
    if settings.ICE_SERVERS_URLS:
        servers.append({"urls": list(settings.ICE_SERVERS_URLS)})
    if settings.TURN_URLS:
        turn: dict[str, object] = {"urls": list(settings.TURN_URLS)}
        if settings.TURN_SECRET:
            turn.update(
                turn_credentials(
                    user=user, secret=settings.TURN_SECRET, ttl_seconds=settings.TURN_CREDENTIAL_TTL_SECONDS
                )
            )
        servers.append(turn)
    return servers
