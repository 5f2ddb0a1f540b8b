"""Media files on local storage are never public: each request is authorised or carries a signature.

Storage layout: ``sessions/<session_id>/...`` (recordings, reply audio, archives) and
``avatars/...`` (scenario persona images and clips, visible to any signed-in user).
"""

from __future__ import annotations

import mimetypes

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.urls import reverse
from django.utils.http import urlencode

from roleplay import selectors
from roleplay.errors import SessionNotFound

_SALT = "lingecho.media"


def media_url(name: str, *, max_age: int = 3600) -> str:
    """A browser-fetchable URL for a stored file: signed and expiring locally, presigned on S3."""
    if settings.LINGECHO_STORAGE != "local":
        return default_storage.url(name)
    token = signing.TimestampSigner(salt=_SALT).sign(f"{name}|{max_age}")
    return reverse("media", kwargs={"path": name}) + "?" + urlencode({"sig": token})


def _signature_allows(path: str, sig: str) -> bool:
    try:
        value = signing.TimestampSigner(salt=_SALT).unsign(sig)
        name, max_age = value.rsplit("|", 1)
        signing.TimestampSigner(salt=_SALT).unsign(sig, max_age=int(max_age))
    except (signing.BadSignature, ValueError):
        return False
    return name == path


def _user_allows(request: HttpRequest, path: str) -> bool:
    user = request.user
    if not user.is_authenticated:
        return False
    parts = path.split("/")
    if parts[0] == "avatars":
        return True
    if parts[0] == "sessions" and len(parts) > 2:
        try:
            selectors.session_get(user=user, session_id=parts[1])
        except SessionNotFound:
            return False
        return True
    return False


def protected_media(request: HttpRequest, path: str) -> FileResponse:
    if ".." in path.split("/"):
        raise Http404
    sig = request.GET.get("sig")
    if not ((sig and _signature_allows(path, sig)) or _user_allows(request, path)):
        raise Http404  # not 403: do not reveal which files exist
    if not default_storage.exists(path):
        raise Http404
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(path, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=300"
    return response
