"""The archive on S3-compatible storage: moto's server mode stands in for AWS S3 / Aliyun OSS / MinIO."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.core.files.storage import default_storage

from media_pipeline.recording import raw_recording_name
from roleplay import services
from roleplay.after_call.archive import archive_names
from roleplay.models import RealtimeSession, SessionAnalytics
from roleplay.pages.media import media_url
from tests.roleplay.recorded_call import make_recorded_session

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("eager_celery")]

BUCKET = "lingecho-test"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=0.5)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def s3(s3_endpoint, settings):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    settings.LINGECHO_STORAGE = "s3"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": BUCKET, "endpoint_url": s3_endpoint, "region_name": "us-east-1",
            "addressing_style": "path", "signature_version": "s3v4", "default_acl": None, "file_overwrite": True,
            "querystring_expire": 600, **CREDENTIALS,
        },
    }}
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)




def test_it_archives_a_session_to_s3_compatible_storage(
    s3, s3_endpoint, alice, scenario, django_capture_on_commit_callbacks
):
    session = make_recorded_session(trainee=alice, scenario=scenario)
    assert default_storage.exists(raw_recording_name(session.pk))  # the call's own recording went to S3 too
    with django_capture_on_commit_callbacks(execute=True):
        services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)
    session.refresh_from_db()
    assert (session.processing, session.processing_detail) == ("done", "done")

    names = archive_names(session.pk)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == set(names.values())  # every artefact, and the raw WAV is gone
    head = s3.head_object(Bucket=BUCKET, Key=names["recording"])
    assert head["ContentType"] == "audio/webm" and head["ContentLength"] > 10_000
    assert s3.head_object(Bucket=BUCKET, Key=names["transcript_vtt"])["ContentType"].startswith("text/vtt")

    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=names["manifest"])["Body"].read())
    assert manifest["files"]["recording"]["bytes"] == head["ContentLength"]
    vtt = s3.get_object(Bucket=BUCKET, Key=names["transcript_vtt"])["Body"].read().decode()
    assert vtt.startswith("WEBVTT")
    assert SessionAnalytics.objects.get(session=session).retranscript["status"] == "done"

    # The review page's link is a presigned URL the browser can fetch directly.
    url = media_url(session.recording.name)
    assert url.startswith(s3_endpoint) and "Signature" in url
    assert httpx.get(url, timeout=5).content == s3.get_object(Bucket=BUCKET, Key=names["recording"])["Body"].read()

    # Running it again over S3 still leaves exactly one copy of each artefact.
    from roleplay.tasks import process_session

    assert process_session.apply(args=[session.pk], kwargs={"force": True}).get() == "done"
    again = {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert again == keys
