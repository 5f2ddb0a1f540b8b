"""HTTP side of /socket.io/: only the WebSocket transport is served; polling gets a clear refusal."""

from django.http import HttpRequest, JsonResponse
from django.urls import re_path


def socketio_polling_refused(request: HttpRequest) -> JsonResponse:
    # Engine.IO error shape, so stock clients surface the message instead of retrying blindly.
    return JsonResponse(
        {
            "code": 3,
            "message": "Bad request: only the websocket transport is supported; use transports: ['websocket'].",
        },
        status=400,
    )


urlpatterns = [re_path(r"^socket\.io/?$", socketio_polling_refused, name="socketio_polling")]
