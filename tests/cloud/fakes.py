"""Local stand-ins for the cloud providers, speaking their documented wire formats.

- :class:`FakeOpenAI`: an aiohttp server with ``/v1/chat/completions`` (SSE streaming),
  ``/v1/audio/transcriptions`` (multipart) and ``/v1/audio/speech`` (streamed pcm/wav), with
  OpenAI's error body ``{"error": {"message", "type", "code"}}``.
- :class:`FakeDashScope`: a websockets server for the duplex task protocol (run-task,
  continue-task, finish-task; task-started, result-generated, task-finished, task-failed),
  doing Paraformer (``task: asr``) and CosyVoice (``task: tts``; the "synthesis" is eSpeak NG
  at the requested rate, so the audio is real speech).

Each runs on 127.0.0.1 in its own thread, so blocking adapters (ASR, TTS) and async ones (the
brain) can talk to it from the test's thread or event loop. Both can be told to fail in the
ways real services do, and both record what they were sent. Error bodies echo the key the
client sent, like a careless provider would, so the tests can prove it never reaches a log.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from media_pipeline.audio import float32_to_pcm16, wav_bytes

KEY = "sk-test-SECRETKEY-0123456789abcdef"


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return float32_to_pcm16(0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32))


# --- OpenAI-compatible HTTP -------------------------------------------------------------------

@dataclass
class FakeOpenAI:
    api_key: str = KEY
    chat_deltas: list[str] = field(default_factory=lambda: ["Well, ", "our budget ", "is tight. ", "What does it ",
                                                            "cost? ", "I need ", "to know."])
    transcript: str = "We can start with a pilot."
    speech_seconds: float = 0.5
    speech_rate: int = 24000
    fail_statuses: list[int] = field(default_factory=list)  # next requests answer these, in order
    stream_error_after: int | None = None  # send an SSE error event after this many deltas
    drop_after: int | None = None  # cut the connection after this many deltas / audio bytes chunks
    delay: float = 0.0  # before answering (timeouts)
    delta_delay: float = 0.0  # between SSE deltas
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # lifecycle
    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
            app.router.add_post("/v1/audio/speech", self._speech)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    # helpers
    def _error(self, status: int, message: str, kind: str = "server_error") -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status)

    async def _gate(self, request: web.Request, record: dict[str, Any]) -> web.Response | None:
        record["path"] = request.path
        record["authorization"] = request.headers.get("Authorization", "")
        self.requests.append(record)
        if self.delay:
            await asyncio.sleep(self.delay)
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            sent = auth.removeprefix("Bearer ")
            return self._error(401, f"Incorrect API key provided: {sent}", "invalid_request_error")
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            return self._error(status, f"The server had an error ({status}); key was {self.api_key}")
        return None

    # endpoints
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        refused = await self._gate(request, {"json": body})
        if refused is not None:
            return refused
        if not body.get("stream"):
            return self._error(400, "this fake only streams", "invalid_request_error")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b": keep-alive\n\n")
        head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}
        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        first = {**head, "choices": [opening]}
        await response.write(f"data: {json.dumps(first)}\n\n".encode())
        for i, delta in enumerate(self.chat_deltas):
            if self.stream_error_after is not None and i == self.stream_error_after:
                err = {"error": {"message": "upstream model overloaded", "type": "server_error"}}
                await response.write(f"data: {json.dumps(err)}\n\n".encode())
                return response
            if self.drop_after is not None and i == self.drop_after:
                request.transport.close()
                return response
            chunk = {**head, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
            if self.delta_delay:
                await asyncio.sleep(self.delta_delay)
        last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        try:
            await response.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
            await response.write_eof()
        except ConnectionResetError:  # the client had heard enough (sentence cap, barge-in)
            pass
        return response

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        record = {"form": {k: v for k, v in form.items() if k != "file"},
                  "file_bytes": len(upload.file.read()) if upload is not None else 0,
                  "filename": getattr(upload, "filename", None)}
        refused = await self._gate(request, record)
        if refused is not None:
            return refused
        if upload is None or not form.get("model"):
            return self._error(400, "file and model are required", "invalid_request_error")
        if form.get("response_format") == "verbose_json":
            return web.json_response({"text": self.transcript, "language": "english", "duration": 1.0,
                                      "segments": [{"text": self.transcript, "avg_logprob": -0.1,
                                                    "no_speech_prob": 0.01}]})
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        refused = await self._gate(request, {"json": body})
        if refused is not None:
            return refused
        if not body.get("input") or not body.get("voice"):
            return self._error(400, "input and voice are required", "invalid_request_error")
        pcm = tone(self.speech_seconds, self.speech_rate)
        fmt = body.get("response_format", "mp3")
        if fmt == "pcm":
            payload = pcm.astype("<i2").tobytes()
        elif fmt == "wav":
            payload = wav_bytes(pcm, self.speech_rate)
        else:
            return self._error(400, f"this fake does not encode {fmt}", "invalid_request_error")
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm" if fmt == "pcm" else "audio/wav"})
        await response.prepare(request)
        try:
            for n, start in enumerate(range(0, len(payload), 4801)):  # odd size: samples split across chunks
                if self.drop_after is not None and n == self.drop_after:
                    request.transport.close()
                    return response
                await response.write(payload[start:start + 4801])
            await response.write_eof()
        except ConnectionResetError:  # the client stopped listening (barge-in): normal
            pass
        return response


# --- DashScope WebSocket ----------------------------------------------------------------------

@dataclass
class FakeDashScope:
    api_key: str = KEY
    asr_sentences: list[str] = field(default_factory=lambda: ["我们的预算有限。", "能先做个试点吗？"])
    fail_code: str | None = None  # answer run-task with task-failed(fail_code)
    fail_times: int = 0  # ... for this many tasks (0 = every task while fail_code is set)
    drop_after_frames: int | None = None  # close the socket after this many binary frames (either way)
    hang: bool = False  # accept run-task, then say nothing
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = None
        self.port = 0
        self._failed = 0
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api-ws/v1/inference/"

    def start(self) -> FakeDashScope:
        self._server = serve(self._handle, "127.0.0.1", self.port, process_request=self._auth,
                             compression=None, max_size=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill the server: the listening socket and every open connection."""
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._thread.join(5)
            self._server = None

    def _auth(self, connection: ServerConnection, request: Any) -> Response | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower() != f"bearer {self.api_key}".lower():
            body = json.dumps({"code": "InvalidApiKey", "message": f"Invalid API-key provided: {auth[7:]}"}).encode()
            return Response(401, "Unauthorized", Headers({"Content-Type": "application/json",
                                                          "Content-Length": str(len(body))}), body)
        return None

    @staticmethod
    def _event(task_id: str, event: str, payload: dict[str, Any] | None = None, **header: Any) -> str:
        return json.dumps({"header": {"task_id": task_id, "event": event, "attributes": {}, **header},
                           "payload": payload if payload is not None else {}}, ensure_ascii=False)

    def _handle(self, ws: ServerConnection) -> None:
        try:
            message = json.loads(ws.recv())
            header, payload = message["header"], message["payload"]
            task_id = header["task_id"]
            record = {"run": message, "audio_bytes": 0, "texts": [], "finished": False}
            self.tasks.append(record)
            problems = self._validate(header, payload)
            if problems:
                ws.send(self._event(task_id, "task-failed", error_code="InvalidParameter",
                                    error_message="; ".join(problems)))
                return
            if self.fail_code and (self.fail_times == 0 or self._failed < self.fail_times):
                self._failed += 1
                ws.send(self._event(task_id, "task-failed", error_code=self.fail_code,
                                    error_message=f"{self.fail_code} for key {self.api_key}"))
                return
            if self.hang:
                self._stopping.wait(30)
                return
            ws.send(self._event(task_id, "task-started"))
            if payload["task"] == "asr":
                self._asr(ws, task_id, record)
            else:
                self._tts(ws, task_id, payload["parameters"], record)
        except ConnectionClosed:
            return

    @staticmethod
    def _validate(header: dict[str, Any], payload: dict[str, Any]) -> list[str]:
        problems = []
        if header.get("action") != "run-task" or header.get("streaming") != "duplex":
            problems.append("header must be action=run-task, streaming=duplex")
        if payload.get("task_group") != "audio" or payload.get("input") != {}:
            problems.append("task_group must be audio and input {}")
        params = payload.get("parameters") or {}
        if payload.get("task") == "asr":
            if payload.get("function") != "recognition" or not payload.get("model"):
                problems.append("asr needs function=recognition and a model")
            if params.get("format") != "pcm" or not params.get("sample_rate"):
                problems.append("asr needs format and sample_rate")
        elif payload.get("task") == "tts":
            if payload.get("function") != "SpeechSynthesizer" or not params.get("voice"):
                problems.append("tts needs function=SpeechSynthesizer and a voice")
            if params.get("text_type") != "PlainText":
                problems.append("text_type must be PlainText")
        else:
            problems.append("unknown task")
        return problems

    def _result(self, task_id: str, text: str, begin: int, end: int | None, final: bool) -> str:
        sentence = {"begin_time": begin, "end_time": end, "text": text, "heartbeat": False, "sentence_end": final,
                    "words": []}
        return self._event(task_id, "result-generated",
                           {"output": {"sentence": sentence}, "usage": {"duration": 1} if final else None})

    def _asr(self, ws: ServerConnection, task_id: str, record: dict[str, Any]) -> None:
        frames = 0
        while True:
            frame = ws.recv()
            if isinstance(frame, bytes):
                frames += 1
                record["audio_bytes"] += len(frame)
                if self.drop_after_frames is not None and frames >= self.drop_after_frames:
                    ws.close()
                    return
                if frames == 3:  # an interim result and a heartbeat, as the service sends while listening
                    ws.send(self._result(task_id, self.asr_sentences[0][:2], 0, None, False))
                    hb = {"begin_time": 0, "end_time": None, "text": "", "heartbeat": True, "sentence_end": False}
                    ws.send(self._event(task_id, "result-generated", {"output": {"sentence": hb}}))
                continue
            message = json.loads(frame)
            if message["header"].get("action") == "finish-task":
                record["finished"] = True
                break
        if record["audio_bytes"] == 0:
            ws.send(self._event(task_id, "task-failed", error_code="NO_VALID_AUDIO_ERROR",
                                error_message="no audio received"))
            return
        ms = record["audio_bytes"] // 32
        for i, sentence in enumerate(self.asr_sentences):
            ws.send(self._result(task_id, sentence, i * ms // 2, (i + 1) * ms // 2, True))
        ws.send(self._event(task_id, "task-finished", {"output": {}, "usage": None}))

    def _tts(self, ws: ServerConnection, task_id: str, params: dict[str, Any], record: dict[str, Any]) -> None:
        from tests.audio_fixtures import speak_pcm16

        rate = int(params.get("sample_rate", 22050))
        frames = 0
        index = 0
        while True:
            message = json.loads(ws.recv())
            action = message["header"].get("action")
            if action == "finish-task":
                record["finished"] = True
                break
            if action != "continue-task":
                continue
            text = message["payload"]["input"]["text"]
            record["texts"].append(text)
            out = {"sentence": {"index": index, "words": []}, "type": "sentence-begin", "original_text": text}
            ws.send(self._event(task_id, "result-generated", {"output": out}))
            language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"
            pcm = speak_pcm16(text, language=language, rate=rate).astype("<i2").tobytes()
            step = rate // 10 * 2 + 1  # ~100 ms, odd: a sample split across frames
            for start in range(0, len(pcm), step):
                mark = {"sentence": {"index": index, "words": []}, "type": "sentence-synthesis"}
                ws.send(self._event(task_id, "result-generated", {"output": mark}))
                ws.send(pcm[start:start + step])
                frames += 1
                if self.drop_after_frames is not None and frames >= self.drop_after_frames:
                    ws.close()
                    return
            end = {"sentence": {"index": index, "words": []}, "type": "sentence-end", "original_text": text}
            ws.send(self._event(task_id, "result-generated", {"output": end, "usage": {"characters": len(text)}}))
            index += 1
        ws.send(self._event(task_id, "task-finished", {"output": {"sentence": {"words": []}},
                                                      "usage": {"characters": 0}}))
