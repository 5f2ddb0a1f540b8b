"""Media files on local storage are never public: each request is authorised or carries a signature.

Storage layout: ``sessions/<session_id>/...`` (recordings, reply audio, archives) and
``avatars/...`` (scenario persona images and clips, visible to any signed-in user).

Files are streamed, with HTTP Range support (``Accept-Ranges: bytes``, 206, 416): a browser's
``<audio>`` element seeks in a recording by asking for byte ranges, and some browsers cannot seek
at all without them. The view is async and every storage call and chunk read runs in the default
thread pool, never on the one thread Django shares between all sync views and database work: a
manager streaming a long recording must not hold up anyone's page or a call's database writes.
(daphne has no flow control towards the client: what a slow client has not read yet waits in the
connection's send buffer. Recordings are a few MB; the old view also held the whole file in memory.)
"""

from __future__ import annotations

import asyncio
import mimetypes
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header, urlencode
from django.views.decorators.http import require_http_methods

from roleplay import selectors
from roleplay.errors import SessionNotFound

_SALT = "lingecho.media"
CHUNK_BYTES = 64 * 1024
_MAX_RANGE_DIGITS = 18  # a bigger number is no file of ours; bounds int() on client input


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


def _user_allows(user, path: str) -> bool:  # noqa: ANN001 - a User or AnonymousUser
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


# --- byte ranges (RFC 9110 §14) ---------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    """The Range names no byte of the file: 416."""


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_RANGE_DIGITS


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a ``Range`` header asks for, or None to send the whole file.

    A header we do not understand, another unit, or several ranges are ignored (the whole file
    with 200, as RFC 9110 allows); a well-formed range starting past the end raises
    :class:`RangeNotSatisfiable`.
    """
    if not header:
        return None
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash:
        return None
    if not first:  # suffix: the last N bytes
        if not _digits(last):
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    if not _digits(first) or (last and not _digits(last)):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


# --- storage, off the shared sync thread --------------------------------------------------------


def _stored_size(name: str) -> int | None:
    """The file's size in bytes, or None when it does not exist."""
    if not default_storage.exists(name):
        return None
    return default_storage.size(name)


def _open_at(name: str, byte_range: ByteRange) -> IO[bytes]:
    """A readable positioned at ``byte_range.start``.

    On S3 (django-storages' S3File) reading would first download the whole object into memory, so
    there we ask S3 for just the range and read its body; anything else is opened and seeked.
    """
    handle = default_storage.open(name, "rb")
    s3_object = getattr(handle, "obj", None)
    if s3_object is not None and hasattr(s3_object, "get"):
        handle.close()
        return s3_object.get(Range=f"bytes={byte_range.start}-{byte_range.end}")["Body"]
    handle.seek(byte_range.start)
    return handle


async def _stream(name: str, byte_range: ByteRange) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(_open_at, name, byte_range)
    try:
        remaining = byte_range.length
        while remaining > 0:
            chunk = await asyncio.to_thread(source.read, min(CHUNK_BYTES, remaining))
            if not chunk:  # the file shrank since we sized it: end early rather than pad
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        source.close()


# --- the view -------------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
async def protected_media(request: HttpRequest, path: str) -> HttpResponse:
    if ".." in path.split("/"):
        raise Http404
    sig = request.GET.get("sig")
    if not (sig and _signature_allows(path, sig)):
        user = await request.auser()
        if not await sync_to_async(_user_allows)(user, path):
            raise Http404  # not 403: do not reveal which files exist
    size = await asyncio.to_thread(_stored_size, path)
    if size is None:
        raise Http404
    # If-Range would need a validator we do not send (ETag/Last-Modified): then the whole file is safe.
    try:
        asked = None if "If-Range" in request.headers else parse_range(request.headers.get("Range"), size)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        response["Accept-Ranges"] = "bytes"
        return response
    byte_range = asked or ByteRange(0, size - 1)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    status = 206 if asked else 200
    if request.method == "HEAD" or size == 0:
        response = HttpResponse(status=status, content_type=content_type)
    else:
        response = StreamingHttpResponse(_stream(path, byte_range), status=status, content_type=content_type)
    response["Content-Length"] = str(max(0, byte_range.length))
    response["Accept-Ranges"] = "bytes"
    if asked:
        response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    response["Content-Disposition"] = content_disposition_header(False, posixpath.basename(path))
    response["Cache-Control"] = "private, max-age=300"
    return response
