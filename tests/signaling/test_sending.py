"""A send racing the client's close is dropped, not a crash of the consumer."""

from __future__ import annotations

from autobahn.exception import Disconnected

from lingecho.ops import task_kind
from signaling.sending import DropSendsAfterClose


class ClosedSocket:
    sent: list = []

    async def send(self, text_data=None, bytes_data=None, close=False):
        raise Disconnected("Attempt to send on a closed protocol")


class Consumer(DropSendsAfterClose, ClosedSocket):
    pass


async def test_it_drops_a_send_on_a_socket_the_client_just_closed():
    await Consumer().send(text_data="42[\"ai-response\",{}]")  # no exception


def test_it_names_task_kinds_without_ids():
    assert task_kind("chunks-sess_8f3a9c") == "chunks"
    assert task_kind("sio-ping-Zx81kq") == "sio-ping"
    assert task_kind("Task-1234") == "unnamed"
    assert task_kind("media-pinned") == "media-pinned"
    assert task_kind("until-recorded-session dropped") == "until-recorded"
