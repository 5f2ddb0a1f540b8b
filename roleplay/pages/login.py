"""``/login/``: Django's LoginView with the sign-in limits of roleplay.login_limits."""

from __future__ import annotations

import math

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from roleplay.login_limits import client_address, login_retry_after


class ThrottledLoginView(LoginView):
    """Too many failures for the username or the address: 429 with ``Retry-After``, and the form
    says how long to wait. The password is not checked at all then (no oracle for a guesser).
    Failures are counted by the authentication backend (roleplay.login_limits)."""

    template_name = "roleplay/login.html"

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        retry_after = login_retry_after(username=self._username(), address=client_address(request))
        if retry_after is not None:
            return self._refused(retry_after)
        return super().post(request, *args, **kwargs)

    def _username(self) -> str:
        return self.request.POST.get("username", "")

    def _refused(self, retry_after: int) -> HttpResponse:
        # An unbound form: a bound AuthenticationForm would try the password while rendering its errors.
        context = self.get_context_data(
            form=self.form_class(request=self.request), throttled_minutes=math.ceil(retry_after / 60)
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(retry_after)
        return response
