// The audio-chunk fallback over Socket.IO at /socket.io/ (used when WebRTC cannot get through).
//
// MediaRecorder cuts the microphone into 250 ms WebM/Opus pieces of one stream (only the first
// carries the header); each is sent as `audio-chunk` with a running `offset` (the piece's index).
// Pieces not yet acknowledged by `audio-received` are kept, so after a reconnect (socket.io-client
// retries with backoff; `start-session` with the same sessionId resumes) they are sent again and
// the server ignores the ones it already has. Replies arrive as text (`ai-response`) and audio to
// fetch (`avatar-response.audioUrl`).
//
// Same events as LingEchoClient, plus play {audioUrl, videoUrl, duration} and turns {turnCount, maxTurns}.

const CHUNK_MS = 250;
const KEEP_UNACKED = 120; // 30 s of audio at most

export class ChunkClient extends EventTarget {
  constructor({ path = "/socket.io/", scenarioId, sessionId = null, language = "en", micStream = null }) {
    super();
    Object.assign(this, { path, scenarioId, sessionId, language, micStream });
    this.socket = null;
    this.recorder = null;
    this.offset = 0;
    this.unacked = new Map();
    this.state = "idle";
    this.ended = false;
    this.started = false;
  }

  connect() {
    if (typeof window.io !== "function") {
      this._emit("error", { code: "ERR_CONNECTION_FAILED", message: "socket.io-client missing", details: { key: "no_socketio" } });
      this._emit("closed", { reason: "error", fatal: true });
      return;
    }
    this._setState("connecting");
    const socket = window.io({
      path: this.path,
      transports: ["websocket"],
      reconnection: true,
      reconnectionAttempts: 6,
      reconnectionDelay: 500,
      reconnectionDelayMax: 8000,
    });
    this.socket = socket;
    socket.on("connect", () => socket.emit("start-session", { sessionId: this.sessionId, scenarioId: this.scenarioId }));
    socket.on("session-started", (d) => this._onStarted(d || {}));
    socket.on("audio-received", (d) => this._onAck(d || {}));
    socket.on("transcription", (d) => {
      this._setState("thinking");
      this._emit("final", { resultId: `c${Date.now()}`, text: d?.text || "" });
    });
    socket.on("ai-response", (d) => {
      this._emit("reply", { text: d?.text || "" });
      if (d?.turnCount != null) this._emit("turns", { turnCount: d.turnCount, maxTurns: d.maxTurns });
    });
    socket.on("avatar-response", (d) => this._emit("play", { audioUrl: d?.audioUrl, videoUrl: d?.videoUrl, duration: d?.duration }));
    socket.on("session-ended", (d) => this._onEnded(d || {}));
    socket.on("error", (d) => {
      if (d?.details?.reason === "media_worker_lost" && this.started && !this.ended) {
        // The server's media worker for this call stopped; the session lives on. Start it again
        // (another worker takes it; streamReset restarts the recorder) instead of showing an error.
        this.suspended = true;
        const delayMs = d.details.retry_after || 1000;
        this._setState("reconnecting");
        this._emit("reconnecting", { attempt: 1, delayMs, max: 1 });
        setTimeout(() => this.socket?.emit("start-session", { sessionId: this.sessionId }), delayMs);
        return;
      }
      this._emit("error", { code: d?.code || "ERR_UNKNOWN", message: d?.message || "", details: d?.details || {} });
    });
    socket.on("disconnect", (reason) => {
      if (this.ended) return;
      if (reason === "io server disconnect") {
        // The server closed us on purpose (ended or refused): nothing to resume.
        this._onEnded({ reason: "error" });
        return;
      }
      this._setState("reconnecting");
      this._emit("reconnecting", { attempt: 1, delayMs: 500, max: 6 });
    });
    socket.io.on("reconnect_attempt", (n) => this._emit("reconnecting", { attempt: n, delayMs: 0, max: 6 }));
    socket.io.on("reconnect_failed", () => {
      this._setState("ended");
      this._emit("closed", { reason: "reconnect_failed", fatal: true });
    });
    socket.on("connect_error", () => {
      if (!this.started && !socket.active) {
        this._emit("error", { code: "ERR_CONNECTION_FAILED", message: "connect_error", details: {} });
        this._emit("closed", { reason: "error", fatal: true });
      }
    });
  }

  sendText(text) {
    // Not in the streaming guide's event list; servers that do not know it ignore it.
    if (!this.socket?.connected) return false;
    this.socket.emit("text-message", { sessionId: this.sessionId, text, language: this.language });
    return true;
  }

  setMuted(muted) {
    for (const track of this.micStream?.getAudioTracks() ?? []) track.enabled = !muted;
  }

  end() {
    if (this.ended) return;
    this._stopRecorder();
    this.socket?.emit("end-session", { sessionId: this.sessionId });
    // Wait briefly for session-ended (its totals), then leave regardless.
    this.endTimer = setTimeout(() => this._onEnded({ reason: "user_requested" }), 3000);
  }

  abandon() {
    this.ended = true;
    this._stopRecorder();
    this.socket?.disconnect();
  }

  // ------------------------------------------------------------------ handlers

  _onStarted(d) {
    const resumed = this.started;
    this.suspended = false;
    this.sessionId = d.sessionId || this.sessionId;
    if (resumed && d.streamReset) {
      // The server lost our stream (restart, other process): begin a new WebM stream at offset 0.
      this._emit("reconnected", {});
      this._stopRecorder();
      this.unacked.clear();
      this.offset = 0;
      this._startRecorder();
    } else if (resumed) {
      this._emit("reconnected", {});
      const next = typeof d.nextOffset === "number" ? d.nextOffset : 0;
      for (const [offset, audioData] of this.unacked) if (offset >= next) this._sendChunk(offset, audioData);
    } else {
      this.started = true;
      this._emit("init", { sessionId: this.sessionId, data: d });
      this._startRecorder();
    }
    this._setState("listening");
  }

  _onAck(d) {
    // nextOffset: every piece below it has arrived in order; `missing` is the first hole to fill.
    const upTo = typeof d.nextOffset === "number" ? d.nextOffset : (typeof d.offset === "number" && !d.gap ? d.offset + 1 : 0);
    for (const key of this.unacked.keys()) if (key < upTo) this.unacked.delete(key);
    const missing = d.missing;
    if (d.gap && typeof missing === "number" && this.unacked.has(missing) && !this.resending) {
      this.resending = true;
      setTimeout(() => { this.resending = false; }, 1000);
      for (const [offset, audioData] of this.unacked) if (offset >= missing) this._sendChunk(offset, audioData);
    }
  }

  _onEnded(d) {
    if (this.ended && this.closedSent) return;
    clearTimeout(this.endTimer);
    this.ended = true;
    this.closedSent = true;
    this._stopRecorder();
    this._setState("ended");
    this._emit("closed", { reason: d.reason || "ended", totalTurns: d.totalTurns, duration: d.duration });
    setTimeout(() => this.socket?.disconnect(), 200);
  }

  // ------------------------------------------------------------------ recording

  _startRecorder() {
    if (!this.micStream) return;
    const mimeType = ["audio/webm;codecs=opus", "audio/webm"].find((m) => window.MediaRecorder?.isTypeSupported?.(m));
    if (!window.MediaRecorder || !mimeType) {
      this._emit("error", { code: "ERR_AUDIO_ENCODE_FAILED", message: "MediaRecorder", details: { key: "recorder_unsupported" } });
      return;
    }
    const recorder = new MediaRecorder(this.micStream, { mimeType, audioBitsPerSecond: 32000 });
    recorder.ondataavailable = async (ev) => {
      if (!ev.data || ev.data.size === 0) return;
      const offset = this.offset++;
      const audioData = await blobToBase64(ev.data);
      this.unacked.set(offset, audioData);
      while (this.unacked.size > KEEP_UNACKED) this.unacked.delete(this.unacked.keys().next().value);
      this._sendChunk(offset, audioData);
    };
    recorder.start(CHUNK_MS);
    this.recorder = recorder;
  }

  _stopRecorder() {
    if (this.recorder && this.recorder.state !== "inactive") {
      try { this.recorder.stop(); } catch { /* stopped */ }
    }
    this.recorder = null;
  }

  _sendChunk(offset, audioData) {
    if (!this.socket?.connected || !this.sessionId || this.suspended) return;
    this.socket.emit("audio-chunk", { sessionId: this.sessionId, audioData, offset, totalChunks: this.offset });
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(name, detail) { this.dispatchEvent(new CustomEvent(name, { detail })); }
}

function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
