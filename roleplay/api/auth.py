"""``POST /api/auth/token/``: simplejwt's token pair behind the sign-in limits (roleplay.login_limits)."""

from __future__ import annotations

from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView

from roleplay.api.throttles import LoginThrottle


class TokenObtainApi(TokenObtainPairView):
    """``{username, password}`` → ``{access, refresh}``. Over the limit: 429 with ``Retry-After``
    before the password is checked; wrong credentials are counted by the authentication backend."""

    throttle_classes = [LoginThrottle, *APIView.throttle_classes]
