"""The after-call job re-transcribes through roleplay's port; the media pipeline plugs in at start-up."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from media_pipeline.retranscribe import FasterWhisperRetranscriber
from roleplay import transcription
from roleplay.after_call import recording
from roleplay.transcription import NoRetranscriber, RetranscribeOptions


class RecordingRetranscriber:
    """A fake at the port: remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[RetranscribeOptions] = []

    def load_stereo(self, source):
        return np.zeros((16000, 2), dtype=np.int16)

    def retranscribe(self, stereo, options):
        self.asked.append(options)
        return {"status": "ok", "segments": []}


@pytest.fixture
def restore_registration():
    registered = transcription.get_retranscriber()
    yield
    transcription.register_retranscriber(registered)


def test_the_media_pipeline_registers_its_retranscriber_when_django_starts():
    assert isinstance(transcription.get_retranscriber(), FasterWhisperRetranscriber)


def test_without_a_registered_retranscriber_the_job_says_what_is_missing(restore_registration):
    transcription.register_retranscriber(None)
    with pytest.raises(NoRetranscriber, match="INSTALLED_APPS"):
        transcription.get_retranscriber()


def test_the_after_call_job_asks_the_registered_retranscriber_in_the_scenario_language(restore_registration):
    fake = RecordingRetranscriber()
    transcription.register_retranscriber(fake)
    session = SimpleNamespace(scenario=SimpleNamespace(language="zh-CN"))
    stereo = np.ones((16000, 2), dtype=np.int16)
    assert recording.retranscribe(session, stereo) == {"status": "ok", "segments": []}
    assert fake.asked[0].language == "zh-CN"


def test_a_call_without_audio_is_not_sent_to_the_retranscriber(restore_registration):
    fake = RecordingRetranscriber()
    transcription.register_retranscriber(fake)
    session = SimpleNamespace(scenario=SimpleNamespace(language="en"))
    assert recording.retranscribe(session, None)["status"] == "skipped"
    assert fake.asked == []
