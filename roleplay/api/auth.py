"""``POST /api/auth/token/``: simplejwt's token pair, with sign-in limits (roleplay.login_limits)."""

from __future__ import annotations

from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView

from roleplay.api.throttles import LoginThrottle, submitted_username
from roleplay.login_limits import client_address, login_failure_record, login_success_record


class TokenObtainApi(TokenObtainPairView):
    """``{username, password}`` → ``{access, refresh}``; wrong credentials count against both limits."""

    throttle_classes = [LoginThrottle, *APIView.throttle_classes]

    def post(self, request: Request, *args, **kwargs) -> Response:
        username = submitted_username(request)
        try:
            response = super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            login_failure_record(username=username, address=client_address(request))
            raise
        login_success_record(username=username)
        return response
