from __future__ import annotations

import pytest

from media_pipeline.heartbeat import publish_heartbeat, withdraw_heartbeat


def test_healthz_answers(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client):
    publish_heartbeat(worker_id="w-test", channel_name="media.w-test", calls=0)
    try:
        body = client.get("/readyz").json()
    finally:
        withdraw_heartbeat(worker_id="w-test")
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["channel_layer"].startswith("ok")
    assert body["checks"]["media_worker"]["live"] >= 1


@pytest.mark.django_db
def test_readyz_is_unavailable_without_a_media_worker(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["media_worker"]["live"] == 0


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"python_info" in response.content
