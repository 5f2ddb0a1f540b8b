"""Run a test-speech function in a process that has never synthesised anything.

libespeak-ng carries state from one utterance to the next (pitch flutter, wave phase), and no call of
its API resets it, so the same text comes out differently depending on what the process said before.
A small server process (started once, single-threaded, so forking it is safe) forks a child for each
request; the child starts from the server's never-used synthesiser, runs the function, sends back the
result and exits. Forking costs a few milliseconds; a fresh interpreter per utterance would cost ~0.2 s.

The protocol, on the server's stdin and a private copy of its stdout: length-prefixed pickles, one
``(module, function, args)`` request, then one ``(ok, value)`` reply.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct("!Q")
ROOT = Path(__file__).resolve().parents[1]


def _send(stream: BinaryIO, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the speech server closed its pipe")
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))  # noqa: S301 - our own child process, over a private pipe


class FreshProcesses:
    """The client: one server, requests one at a time (a lock), restarted if it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: subprocess.Popen | None = None

    def call(self, module: str, function: str, *args: object) -> Any:
        with self._lock:
            if self._server is None or self._server.poll() is not None:
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
                self._server = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                    [sys.executable, "-m", "tests.espeak_fresh"], cwd=ROOT, env=env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            _send(self._server.stdin, (module, function, args))
            ok, value = _receive(self._server.stdout)
        if not ok:
            raise RuntimeError(f"{module}.{function} failed in the fresh process:\n{value}")
        return value


def _serve() -> None:
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever an import prints goes to stderr, not into the replies
    importlib.import_module("tests.audio_fixtures")  # numpy, av, the library's module: loaded, not used
    while True:
        try:
            module, function, args = _receive(requests)
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:
            try:
                reply = (True, getattr(importlib.import_module(module), function)(*args))
            except BaseException:  # noqa: BLE001 - the caller hears every failure
                reply = (False, traceback.format_exc())
            _send(replies, reply)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            _send(replies, (False, f"the child exited with status {status}"))


if __name__ == "__main__":
    _serve()
