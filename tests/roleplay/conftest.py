"""Fixtures shared by the after-call tests."""

from __future__ import annotations

import pytest

from lingecho.celery import app as celery_app


@pytest.fixture
def eager_celery(settings):
    """Run tasks in-process even in the scaled test pass (where a broker URL is set)."""
    saved = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = True, False
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False  # synchronous, so each test can assert right away
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved
