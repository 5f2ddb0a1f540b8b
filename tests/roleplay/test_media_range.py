"""Recordings are streamed with HTTP Range support, read off the shared sync thread, and still
served only to a valid signature or an authorised user."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connections
from django.test import AsyncClient, Client

from roleplay.models import RealtimeSession
from roleplay.pages import media
from roleplay.pages.media import ByteRange, RangeNotSatisfiable, media_url, parse_range
from tests.factories import PASSWORD
from tests.roleplay.test_s3_storage import s3, s3_endpoint  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 300_000  # several 64 KiB chunks
BODY = os.urandom(SIZE)


@pytest.fixture
def recording(alice, scenario) -> str:
    session = RealtimeSession.objects.create(trainee=alice, scenario=scenario, transport="webrtc", state="ended")
    return default_storage.save(f"sessions/{session.pk}/recording.webm", ContentFile(BODY))


@pytest.fixture(autouse=True)
async def _close_the_shared_threads_connection():
    """Async tests reach the database from asgiref's shared sync thread; close that connection so
    the test database can be dropped (PostgreSQL refuses while a session is open)."""
    yield
    await sync_to_async(connections.close_all)()


async def _get(url: str, **headers: str):
    response = await AsyncClient().get(url, headers=headers)
    body = b"".join([chunk async for chunk in response.streaming_content]) if response.streaming else response.content
    return response, body


# --- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=100-199", ByteRange(100, 199)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the file is the whole file
        ("bytes=900-5000", ByteRange(900, 999)),  # an end past the file is clamped
        ("bytes = 1-2", ByteRange(1, 2)),
        (None, None),
        ("items=1-2", None),  # another unit: ignored
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("bytes=5-1", None),  # malformed: ignored
        ("bytes=a-b", None),
        ("bytes=١-٢", None),  # digits, but not ASCII
        ("bytes=" + "9" * 40 + "-", None),  # absurd numbers are not parsed
    ],
)
def test_it_parses_one_byte_range(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


# --- serving ------------------------------------------------------------------------------------------


async def test_it_streams_the_whole_file_and_says_ranges_are_accepted(recording):
    response, body = await _get(media_url(recording))
    assert response.status_code == 200 and response.streaming
    assert body == BODY
    assert response["Content-Length"] == str(SIZE) and response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"].endswith("/webm") and "Content-Range" not in response


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=100-199", 100, 199), ("bytes=100-", 100, SIZE - 1), ("bytes=-100", SIZE - 100, SIZE - 1),
     ("bytes=70000-200000", 70000, 200000)],
)
async def test_it_answers_a_range_with_206_and_exactly_those_bytes(recording, header, start, end):
    response, body = await _get(media_url(recording), Range=header)
    assert response.status_code == 206
    assert body == BODY[start : end + 1]
    assert response["Content-Length"] == str(end - start + 1)
    assert response["Content-Range"] == f"bytes {start}-{end}/{SIZE}"


async def test_an_unsatisfiable_range_gets_416_with_the_size(recording):
    response, body = await _get(media_url(recording), Range=f"bytes={SIZE}-")
    assert response.status_code == 416 and body == b""
    assert response["Content-Range"] == f"bytes */{SIZE}"


async def test_a_head_request_gets_the_headers_without_the_body(recording):
    response = await AsyncClient().head(media_url(recording), headers={"Range": "bytes=0-9"})
    assert response.status_code == 206 and response.content == b""
    assert response["Content-Length"] == "10" and response["Content-Range"] == f"bytes 0-9/{SIZE}"


async def test_file_reads_run_off_the_thread_that_serves_sync_views_and_the_database(recording, monkeypatch):
    threads: dict[str, set[int]] = {"database": set(), "file": set()}
    user_allows, open_at = media._user_allows, media._open_at

    def watched_user_allows(user, path):
        threads["database"].add(threading.get_ident())
        return user_allows(user, path)

    def watched_open_at(name, byte_range):
        threads["file"].add(threading.get_ident())
        return open_at(name, byte_range)

    monkeypatch.setattr(media, "_user_allows", watched_user_allows)
    monkeypatch.setattr(media, "_open_at", watched_open_at)
    client = AsyncClient()
    await client.aforce_login(await _alice())
    response = await client.get(f"/media/{recording}", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert b"".join([chunk async for chunk in response.streaming_content]) == BODY[:100]
    assert threads["database"] and threads["file"]
    assert threads["file"].isdisjoint(threads["database"] | {threading.get_ident()})


async def _alice():
    from roleplay.models import User

    return await User.objects.aget(username="alice")


# --- authorisation, unchanged --------------------------------------------------------------------------


def test_a_signed_url_needs_no_sign_in_and_a_bad_signature_is_404(recording):
    assert Client().get(media_url(recording)).status_code == 200
    assert Client().get(f"/media/{recording}?sig=forged").status_code == 404
    assert Client().get(f"/media/{recording}").status_code == 404


def test_only_users_who_may_see_the_session_get_its_recording(recording, alice, bob, charlie):
    def client_for(user) -> Client:
        client = Client()
        assert client.login(username=user.username, password=PASSWORD)
        return client

    assert client_for(alice).get(f"/media/{recording}", headers={"Range": "bytes=0-0"}).status_code == 206
    assert client_for(charlie).get(f"/media/{recording}").status_code == 200  # alice's manager
    assert client_for(bob).get(f"/media/{recording}").status_code == 404  # another trainee
    assert client_for(alice).get("/media/sessions/../secret_key").status_code == 404


def test_a_missing_file_is_404(alice, scenario):
    assert Client().get(media_url("sessions/nope/recording.webm")).status_code == 404


# --- S3-compatible storage (moto stands in for AWS S3 / Aliyun OSS / MinIO) --------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
async def test_on_s3_compatible_storage_ranges_come_from_the_bucket(settings, monkeypatch):
    readers: list[str] = []
    open_at = media._open_at

    def watched_open_at(*args):
        reader = open_at(*args)
        readers.append(type(reader).__name__)
        return reader

    monkeypatch.setattr(media, "_open_at", watched_open_at)
    name = await asyncio.to_thread(default_storage.save, "sessions/s3call/recording.webm", ContentFile(BODY))
    settings.LINGECHO_STORAGE = "local"  # the signed /media/ URL (on S3 pages hand out presigned URLs instead)
    url = media_url(name)
    whole, body = await _get(url)
    assert whole.status_code == 200 and body == BODY
    part, body = await _get(url, Range="bytes=100-199")
    assert part.status_code == 206 and body == BODY[100:200]
    assert part["Content-Range"] == f"bytes 100-199/{SIZE}"
    tail, body = await _get(url, Range="bytes=-100")
    assert tail.status_code == 206 and body == BODY[-100:]
    assert (await _get(url, Range=f"bytes={SIZE}-"))[0].status_code == 416
    # S3 was asked for each range: the object is never downloaded whole into memory (django-storages' S3File).
    assert len(readers) == 3 and all(r.startswith("Streaming") and r.endswith("Body") for r in readers), readers
