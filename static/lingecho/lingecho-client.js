// The LingEcho protocol over /ws/voice/: JSON signaling on a WebSocket, the call's audio over WebRTC.
//
// Flow (docs/protocol.md): connect → init → offer (SDP with every candidate, no local trickle
// needed) → answer → ICE → connected → ready ⇄ ready → asr_start (mode auto: the server's VAD
// decides when a turn ends). Losing the socket mid-call reconnects with exponential backoff and
// ?session=<id>, which resumes the same session; WebRTC is then negotiated afresh.
//
// Events (CustomEvent.detail): state {state}, init {sessionId, data}, interim {resultId, text},
// final {resultId, text}, reply {text}, remote-stream {stream}, error {code, message, details},
// webrtc-failed {reason}, reconnecting {attempt, delayMs, max}, reconnected, closed {reason}.

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 8000;
const MAX_RECONNECTS = 6;
const PING_EVERY_MS = 15000;
const GATHER_TIMEOUT_MS = 3000;

export class LingEchoClient extends EventTarget {
  constructor({ path = "/ws/voice/", scenarioId, sessionId = null, language = "en", micStream = null,
    webrtcTimeoutMs = 12000 }) {
    super();
    Object.assign(this, { path, scenarioId, sessionId, language, micStream, webrtcTimeoutMs });
    this.ws = null;
    this.pc = null;
    this.state = "idle";
    this.ended = false;
    this.abandoned = false;
    this.everConnected = false;
    this.attempt = 0;
    this.webrtcUp = false;
    this.timers = new Set();
  }

  // ------------------------------------------------------------------ public

  connect() {
    this._setState(this.everConnected ? "reconnecting" : "connecting");
    const params = new URLSearchParams({ scenario: String(this.scenarioId) });
    if (this.sessionId) params.set("session", this.sessionId);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.path}?${params}`);
    this.ws = ws;
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onclose = (ev) => { if (ws === this.ws) this._onClose(ev); };
    ws.onerror = () => { /* onclose follows with the details */ };
  }

  sendText(text) {
    const messageId = `msg_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    return this._send("text_message", { message_id: messageId, text, language: this.language });
  }

  setMuted(muted) {
    for (const track of this.micStream?.getAudioTracks() ?? []) track.enabled = !muted;
  }

  /** Hang up: tell the server (it ends the session with reason user_requested) and close. */
  end() {
    if (this.ended) return;
    this.ended = true;
    this._send("disconnect", { reason: "user_requested" });
    this._teardown(1500);
    this._setState("ended");
    this._emit("closed", { reason: "user_requested" });
  }

  /** Leave without ending the session (switching to the fallback transport keeps the same session). */
  abandon() {
    this.abandoned = true;
    this._teardown(0);
  }

  // ------------------------------------------------------------------ socket events

  _onMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    const data = msg.data || {};
    switch (msg.type) {
      case "init": return this._onInit(msg, data);
      case "answer": return this._onAnswer(data);
      case "ice_candidate": return this._onRemoteCandidate(data);
      case "connected": return this._onServerConnected();
      case "ready": return this._onServerReady();
      case "asr_interim": return this._emit("interim", { resultId: data.result_id, text: data.text || "" });
      case "asr_result":
        // A backchannel ("mm-hm") over the buyer is shown but takes no turn; a result_id seen before
        // is the same turn continued (the buyer yielded), so the page replaces that line.
        if (data.backchannel) return this._emit("backchannel", { resultId: data.result_id, text: data.text || "" });
        this._setState("thinking");
        return this._emit("final", { resultId: data.result_id, text: data.text || "" });
      case "text_response":
        if (this.state !== "buyer") this._setState("thinking");
        return this._emit("reply", { text: data.text || "", responseId: data.response_id });
      case "tts_start": return this._setState("buyer");
      case "tts_complete":
        // withdrawn: the trainee went on right after the buyer started; that reply is not part of the call.
        if (data.withdrawn) this._emit("withdrawn", { responseId: data.request_id });
        return this._setState("listening");
      case "ping": return this._send("pong", { server_time: Date.now() });
      case "pong": return undefined;
      case "disconnect": return this._onServerDisconnect(data);
      case "error": return this._onError(data);
      default: return undefined;
    }
  }

  _onClose(ev) {
    this._clearTimers();
    if (this.ended || this.abandoned) return;
    if (!this.everConnected && this.attempt === 0) {
      // Refused before init: bad origin/credentials, or the server is down. Nothing to resume.
      this._emit("error", { code: "ERR_CONNECTION_FAILED", message: `closed ${ev.code}`, details: {} });
      this._setState("ended");
      this._emit("closed", { reason: "error", fatal: true });
      return;
    }
    this._scheduleReconnect();
  }

  // ------------------------------------------------------------------ protocol handlers

  async _onInit(msg, data) {
    const resumed = Boolean(data.resumed) || this.attempt > 0;
    this.sessionId = msg.session_id || this.sessionId;
    this.init = data;
    if (resumed && this.everConnected) {
      this.attempt = 0;
      this._emit("reconnected", {});
    } else {
      this.everConnected = true;
      this._emit("init", { sessionId: this.sessionId, data });
    }
    this._every(PING_EVERY_MS, () => this._send("ping", {}));
    try {
      await this._negotiate(data.ice_servers || []);
    } catch (err) {
      this._emit("webrtc-failed", { reason: String(err?.message || err) });
    }
  }

  async _negotiate(iceServers) {
    this._closePeer();
    this.webrtcUp = false;
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    const track = this.micStream?.getAudioTracks()[0];
    if (track) pc.addTrack(track, this.micStream);
    else pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => this._emit("remote-stream", { stream: ev.streams[0] || new MediaStream([ev.track]) });
    pc.onconnectionstatechange = () => this._onPeerState(pc);
    pc.onicecandidate = (ev) => {
      // Candidates gathered after the offer went out are trickled; the rest are already in the SDP.
      if (!this.offerSent || pc !== this.pc) return;
      const c = ev.candidate;
      this._send("ice_candidate", c
        ? { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex }
        : { candidate: "", sdp_mid: null, sdp_mline_index: null });
    };
    this.offerSent = false;
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc, GATHER_TIMEOUT_MS);
    this._send("offer", { sdp: withOpusDtx(pc.localDescription.sdp), candidates: [] });
    this.offerSent = true;
    const sessionAtOffer = pc;
    this._after(this.webrtcTimeoutMs, () => {
      if (this.pc === sessionAtOffer && !this.webrtcUp && !this.ended) {
        this._emit("webrtc-failed", { reason: "timeout" });
      }
    });
  }

  async _onAnswer(data) {
    if (!this.pc) return;
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
      // Candidate lines (the protocol's form) or ice_candidate-shaped objects; both are also in the SDP.
      for (const c of data.candidates || []) {
        await this._onRemoteCandidate(typeof c === "string" ? { candidate: c } : c);
      }
    } catch (err) {
      this._emit("webrtc-failed", { reason: `answer: ${err?.message || err}` });
    }
  }

  async _onRemoteCandidate(data) {
    if (!this.pc || !data || !data.candidate) return;
    try {
      await this.pc.addIceCandidate({ candidate: data.candidate, sdpMid: data.sdp_mid ?? "0",
        sdpMLineIndex: data.sdp_mline_index ?? 0 });
    } catch { /* a stale candidate after renegotiation is harmless */ }
  }

  _onPeerState(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      // The server's own `connected` (from the media worker) moves the protocol on; this is informational.
      this._send("connected", { connection_state: "connected", audio_codec: "opus", sample_rate: 48000 });
    } else if (state === "failed") {
      if (this.webrtcUp) this._forceReconnect();
      else this._emit("webrtc-failed", { reason: "ice failed" });
    }
  }

  _onServerConnected() { this._sendReady(); }

  _sendReady() {
    if (this.readySent) return;
    this.readySent = true;
    this._send("ready", { direction: "both" });
  }

  _onServerReady() {
    if (this.webrtcUp) return;
    this.webrtcUp = true;
    this._send("asr_start", { language: this.language, format: "opus", sample_rate: 48000, mode: "auto" });
    this._setState("listening");
  }

  _onServerDisconnect(data) {
    this.ended = true;
    this._teardown(0);
    this._setState("ended");
    this._emit("closed", { reason: data.reason || "ended" });
  }

  _onError(data) {
    const code = data.code || "ERR_UNKNOWN";
    if (code === "ERR_WEBRTC_FAILED" && !this.webrtcUp) {
      this._emit("webrtc-failed", { reason: data.message || code });
      return;
    }
    if (code === "ERR_INVALID_MESSAGE") {
      // Our own mistake, nothing the trainee can act on: keep it for the developer console.
      console.warn("LingEcho: server rejected a message", data);
      return;
    }
    this._emit("error", { code, message: data.message || "", details: data.details || {} });
    if (code === "ERR_SESSION_NOT_FOUND") {
      this.ended = true;
      this._teardown(0);
      this._setState("ended");
      this._emit("closed", { reason: "error", fatal: true });
    }
  }

  // ------------------------------------------------------------------ reconnect

  _forceReconnect() {
    const ws = this.ws;
    this.ws = null;
    try { ws?.close(); } catch { /* already closed */ }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._closePeer();
    if (this.attempt >= MAX_RECONNECTS) {
      this._setState("ended");
      this._emit("closed", { reason: "reconnect_failed", fatal: true });
      return;
    }
    const delayMs = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    this.attempt += 1;
    this._setState("reconnecting");
    this._emit("reconnecting", { attempt: this.attempt, delayMs, max: MAX_RECONNECTS });
    this._after(delayMs, () => this.connect());
  }

  // ------------------------------------------------------------------ plumbing

  _send(type, data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type, session_id: this.sessionId || "", timestamp: Date.now(), data, error: null }));
    return true;
  }

  _teardown(delayMs) {
    this._clearTimers();
    this._closePeer();
    const ws = this.ws;
    this.ws = null;
    setTimeout(() => { try { ws?.close(1000); } catch { /* closed */ } }, delayMs);
  }

  _closePeer() {
    this.readySent = false;
    if (this.pc) { try { this.pc.close(); } catch { /* closed */ } }
    this.pc = null;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(name, detail) { this.dispatchEvent(new CustomEvent(name, { detail })); }

  _after(ms, fn) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
  }

  _every(ms, fn) {
    const id = setInterval(fn, ms);
    this.timers.add(id);
  }

  _clearTimers() {
    for (const id of this.timers) { clearTimeout(id); clearInterval(id); }
    this.timers.clear();
  }
}

function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); clearTimeout(timer); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Ask the server for Opus DTX (RFC 7587 `usedtx=1`, a receiver's preference): while the buyer is
// silent it then sends a packet every 400 ms instead of every 20 ms, less for the device to
// receive and decode. Only the offer sent to the server changes; the local description stays.
export function withOpusDtx(sdp) {
  const rtpmap = sdp.match(/a=rtpmap:(\d+) opus\/48000[^\r\n]*/i);
  if (!rtpmap) return sdp;
  const fmtp = new RegExp(`^a=fmtp:${rtpmap[1]} ([^\\r\\n]*)`, "m");
  if (fmtp.test(sdp)) {
    return sdp.replace(fmtp, (line, params) => (/usedtx=/.test(params) ? line : `${line};usedtx=1`));
  }
  return sdp.replace(rtpmap[0], `${rtpmap[0]}\r\na=fmtp:${rtpmap[1]} usedtx=1`);
}
