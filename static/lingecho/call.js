// The practice-call page: pre-call check, the call itself (WebRTC first, chunk fallback), transcript.
//
// The two transport clients share one event vocabulary, so this file only turns events into what
// the trainee sees. Every failure becomes a sentence from the i18n block that says what to do next.

import { ChunkClient } from "./chunk-client.js";
import { LingEchoClient } from "./lingecho-client.js";
import { el, levelMeter, mmss, readJson, t } from "./util.js";

const cfg = readJson("call-config");
const $ = (id) => document.getElementById(id);
const ui = {
  micCheck: $("mic-check"), micLevel: $("mic-level"), micStatus: $("mic-status"),
  connCheck: $("conn-check"), connStatus: $("conn-status"), start: $("start-call"),
  state: $("call-state"), turns: $("turns"), timer: $("timer"), avatar: $("avatar"), mouth: $("mouth"),
  video: $("avatar-video"), notice: $("notice"), mute: $("mute"), end: $("end-call"),
  transportNote: $("transport-note"), audio: $("buyer-audio"), transcript: $("transcript"),
  typedForm: $("typed-form"), typedText: $("typed-text"), typedSend: $("typed-send"),
};

const call = {
  mic: null, ctx: null, stopMicMeter: null, stopBuyerMeter: null, client: null, transport: null,
  sessionId: cfg.sessionId, startedAt: null, timerId: null, turns: 0, muted: false, interim: null,
  elementSource: null, finished: false,
};

// ------------------------------------------------------------------ notices

function notice(message, kind = "warn") {
  ui.notice.hidden = !message;
  ui.notice.className = `notice ${kind}`;
  ui.notice.textContent = message || "";
}

function errorMessage({ code, message, details }) {
  if (details?.key) return t(details.key);
  switch (code) {
    case "ERR_RATE_LIMIT": return t(details?.reason === "capacity" ? "lines_busy" : "rate_limit",
      { seconds: Math.ceil((details?.retry_after || 1000) / 1000) });
    case "ERR_ASR_FAILED": return t("asr_failed");
    case "ERR_TTS_FAILED": return t("tts_failed");
    case "ERR_SESSION_NOT_FOUND": return t("session_gone");
    case "ERR_CONNECTION_FAILED": return t("conn_fail");
    case "ERR_AUDIO_ENCODE_FAILED": return t("asr_failed");
    default: return t("generic_error", { detail: message || code });
  }
}

// ------------------------------------------------------------------ pre-call check

function audioContext() {
  if (!call.ctx) call.ctx = new AudioContext();
  if (call.ctx.state === "suspended") call.ctx.resume();
  return call.ctx;
}

async function checkMic() {
  ui.micStatus.textContent = t("mic_checking");
  ui.micStatus.className = "status-line";
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.micStatus.textContent = t("mic_unsupported");
    ui.micStatus.className = "status-line bad";
    return null;
  }
  try {
    if (!call.mic) {
      call.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    }
    const ctx = audioContext();
    call.stopMicMeter?.();
    const meter = ui.micLevel.parentElement;
    call.stopMicMeter = levelMeter(ctx, ctx.createMediaStreamSource(call.mic), (level) => {
      const pct = Math.round(level * 100);
      ui.micLevel.style.width = `${pct}%`;
      meter.setAttribute("aria-valuenow", String(pct));
    });
    ui.micStatus.textContent = t("mic_ok");
    ui.micStatus.className = "status-line good";
    return call.mic;
  } catch (err) {
    const name = err?.name || "";
    ui.micStatus.textContent = t(name === "NotFoundError" || name === "OverconstrainedError" ? "mic_missing" : "mic_denied");
    ui.micStatus.className = "status-line bad";
    return null;
  }
}

async function checkConnection() {
  ui.connStatus.textContent = t("conn_testing");
  ui.connStatus.className = "status-line";
  let ready = null;
  try {
    const res = await fetch(cfg.readyzUrl, { credentials: "same-origin" });
    ready = await res.json();
  } catch {
    ui.connStatus.textContent = t("conn_fail");
    ui.connStatus.className = "status-line bad";
    return false;
  }
  const wsOk = await probeWebSocket();
  if (!wsOk) {
    ui.connStatus.textContent = t("conn_no_ws");
    ui.connStatus.className = "status-line bad";
    return false;
  }
  if (!ready?.checks?.media_worker?.live) {
    ui.connStatus.textContent = t("conn_no_worker");
    ui.connStatus.className = "status-line warn";
    return true;
  }
  ui.connStatus.textContent = t("conn_ok");
  ui.connStatus.className = "status-line good";
  return true;
}

/** Can a WebSocket reach the server? An Engine.IO handshake answers without starting a session. */
function probeWebSocket() {
  return new Promise((resolve) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try { ws = new WebSocket(`${scheme}//${location.host}${cfg.socketioPath}?EIO=4&transport=websocket`); } catch { resolve(false); return; }
    const timer = setTimeout(() => { try { ws.close(); } catch { /* */ } resolve(false); }, 4000);
    ws.onopen = () => { clearTimeout(timer); ws.close(); resolve(true); };
    ws.onerror = () => { clearTimeout(timer); resolve(false); };
  });
}

// ------------------------------------------------------------------ transcript

function clearEmpty() { ui.transcript.querySelector(".empty")?.remove(); }

function line(speaker, text, { interim = false, typed = false } = {}) {
  clearEmpty();
  const who = speaker === "buyer" ? (cfg.personaName || t("buyer")) : t("you");
  const li = el("li", { class: `utt ${speaker}${interim ? " interim" : ""}` },
    el("span", { class: "who", text: who + (typed ? ` (${t("typed")})` : "") }),
    el("span", { class: "text", text }));
  ui.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function showInterim(text) {
  if (!text) return;
  if (!call.interim) call.interim = line("trainee", text, { interim: true });
  else call.interim.querySelector(".text").textContent = text;
}

function showFinal(text, resultId = "") {
  const earlier = resultId && call.finals?.get(resultId);
  if (earlier) {  // the same turn, continued after the buyer yielded: one line, one turn
    earlier.querySelector(".text").textContent = text;
    call.interim?.remove();
    call.interim = null;
    return;
  }
  let li = null;
  if (call.interim) {
    li = call.interim;
    li.classList.remove("interim");
    li.querySelector(".text").textContent = text;
    call.interim = null;
  } else if (text) {
    li = line("trainee", text);
  }
  if (li && resultId) (call.finals ??= new Map()).set(resultId, li);
  if (text) setTurns(call.turns + 1);
}

function showReply(text, responseId = "") {
  const li = line("buyer", text);
  if (responseId) (call.replies ??= new Map()).set(responseId, li);
}

function withdrawReply(responseId) {
  call.replies?.get(responseId)?.remove();
  call.replies?.delete(responseId);
}

function showBackchannel(text) {
  call.interim?.remove();
  call.interim = null;
  if (text) line("trainee", text).classList.add("backchannel");
}

function setTurns(n, max = cfg.maxTurns) {
  call.turns = n;
  ui.turns.textContent = t("turn_of", { n: Math.min(n, max), max });
}

// ------------------------------------------------------------------ states, avatar, timer

const STATE_KEYS = {
  idle: "state_idle", connecting: "state_connecting", listening: "state_listening", thinking: "state_thinking",
  buyer: "state_buyer", reconnecting: "state_reconnecting", ended: "state_ended",
};

function setState(state) {
  ui.state.textContent = call.muted && state === "listening" ? t("muted") : t(STATE_KEYS[state] || "state_idle");
  ui.state.className = `pill state-${state}`;
  ui.avatar.classList.toggle("speaking", state === "buyer");
  document.body.dataset.callState = state;
  if (ui.video) {
    if (state === "buyer") ui.video.play().catch(() => {});
    else ui.video.pause();
  }
}

function animateMouth(level) {
  if (ui.mouth) ui.mouth.setAttribute("ry", String(3 + level * 16));
  ui.avatar.style.setProperty("--level", level.toFixed(2));
}

function watchBuyer(source) {
  call.stopBuyerMeter?.();
  call.stopBuyerMeter = levelMeter(audioContext(), source, (level) => {
    animateMouth(level);
    if (call.transport === "webrtc" && level > 0.04) ui.avatar.classList.add("speaking");
  });
}

function startTimer() {
  if (call.timerId) return;
  call.startedAt = Date.now();
  call.timerId = setInterval(() => {
    const elapsed = Date.now() - call.startedAt;
    ui.timer.textContent = mmss(elapsed);
    if (cfg.timeLimitSeconds && elapsed > cfg.timeLimitSeconds * 1000 + 30000) endCall();
  }, 500);
}

async function playAudio(audioEl) {
  try { await audioEl.play(); } catch {
    notice(t("audio_blocked"));
    document.addEventListener("click", () => { audioEl.play().catch(() => {}); notice(""); }, { once: true });
  }
}

// ------------------------------------------------------------------ the call

function wire(client) {
  client.addEventListener("state", (e) => setState(e.detail.state));
  client.addEventListener("init", (e) => {
    call.sessionId = e.detail.sessionId;
    const url = new URL(location.href);
    url.searchParams.set("session", call.sessionId);
    history.replaceState(null, "", url);
    if (e.detail.data?.max_turns || e.detail.data?.maxTurns) cfg.maxTurns = e.detail.data.max_turns || e.detail.data.maxTurns;
    setTurns(call.turns);
    startTimer();
    ui.mute.disabled = ui.end.disabled = ui.typedText.disabled = ui.typedSend.disabled = false;
  });
  client.addEventListener("interim", (e) => showInterim(e.detail.text));
  client.addEventListener("final", (e) => showFinal(e.detail.text, e.detail.resultId));
  client.addEventListener("reply", (e) => showReply(e.detail.text, e.detail.responseId));
  client.addEventListener("withdrawn", (e) => withdrawReply(e.detail.responseId));
  client.addEventListener("backchannel", (e) => showBackchannel(e.detail.text));
  client.addEventListener("turns", (e) => setTurns(e.detail.turnCount, e.detail.maxTurns || cfg.maxTurns));
  client.addEventListener("remote-stream", (e) => {
    ui.audio.srcObject = e.detail.stream;
    playAudio(ui.audio);
    watchBuyer(audioContext().createMediaStreamSource(e.detail.stream));
  });
  client.addEventListener("play", (e) => {
    if (!e.detail.audioUrl) return;
    ui.audio.srcObject = null;
    ui.audio.src = e.detail.audioUrl;
    if (!call.elementSource) {
      call.elementSource = audioContext().createMediaElementSource(ui.audio);
      call.elementSource.connect(audioContext().destination);
    }
    watchBuyer(call.elementSource);
    setState("buyer");
    playAudio(ui.audio);
  });
  client.addEventListener("reconnecting", (e) => {
    notice(t("reconnecting", { seconds: Math.max(1, Math.round(e.detail.delayMs / 1000)), attempt: e.detail.attempt, max: e.detail.max }));
  });
  client.addEventListener("reconnected", () => notice(t("reconnected"), "ok"));
  client.addEventListener("error", (e) => {
    notice(errorMessage(e.detail), "bad");
    if (e.detail.code === "ERR_RATE_LIMIT" && e.detail.details?.reason === "capacity" && !call.finished) {
      // All lines busy: no call was set up. Drop this attempt; "Start call" tries again with a new one.
      client.abandon();
      call.sessionId = null;
      onClosed({ reason: "lines_busy", fatal: true });
      setState("idle");
    }
  });
  client.addEventListener("webrtc-failed", () => fallBack());
  client.addEventListener("closed", (e) => onClosed(e.detail));
}

ui.audio.addEventListener("ended", () => { if (call.transport === "chunk" && !call.finished) setState("listening"); });

function startClient(kind) {
  call.transport = kind;
  const opts = { scenarioId: cfg.scenarioId, sessionId: call.sessionId, language: cfg.language, micStream: call.mic };
  const client = kind === "chunk"
    ? new ChunkClient({ ...opts, path: cfg.socketioPath })
    : new LingEchoClient({ ...opts, path: cfg.wsPath });
  document.body.dataset.transport = kind;
  call.client = client;
  wire(client);
  client.connect();
}

function fallBack() {
  if (call.transport !== "webrtc" || call.finished) return;
  call.client.abandon();
  call.transport = "chunk";
  notice(t("fallback_notice"), "info");
  ui.transportNote.textContent = t("fallback_notice");
  // Let the server notice the dropped socket first, so the fallback resumes a cleanly dropped session.
  setTimeout(() => startClient("chunk"), 400);
}

async function startCall() {
  ui.start.disabled = true;
  notice("");
  audioContext();
  if (!call.mic) await checkMic();
  const forced = cfg.transport === "chunk" || !window.RTCPeerConnection;
  if (cfg.transport === "chunk") ui.transportNote.textContent = t("forced_chunk");
  showPrecheck(false);
  startClient(forced ? "chunk" : "webrtc");
  ui.end.focus();
}

/** Before the call the setup checks matter; during it, short instructions take their place. */
function showPrecheck(show) {
  document.getElementById("precheck").hidden = !show;
  document.getElementById("call-tips").hidden = show;
}

function endCall() {
  if (!call.client || call.finished) return;
  call.client.end();
}

function onClosed(detail) {
  if (call.finished) return;
  clearInterval(call.timerId);
  call.stopBuyerMeter?.();
  ui.mute.disabled = ui.end.disabled = ui.typedText.disabled = ui.typedSend.disabled = true;
  if (detail.fatal) {
    call.finished = false;
    call.client = null;
    ui.start.disabled = false;
    showPrecheck(true);
    if (detail.reason === "reconnect_failed") notice(t("reconnect_failed"), "bad");
    else if (ui.notice.hidden) notice(t("conn_fail"), "bad");
    if (call.sessionId && detail.reason === "reconnect_failed") ui.end.disabled = false;
    return;
  }
  call.finished = true;
  setState("ended");
  notice(detail.reason === "max_turns" ? `${t("max_turns")} ${t("ended_opening_results")}` : t("ended_opening_results"), "ok");
  if (call.sessionId) {
    setTimeout(() => { location.href = cfg.resultUrl.replace("SESSION", encodeURIComponent(call.sessionId)); }, 1200);
  }
}

// ------------------------------------------------------------------ controls

ui.micCheck.addEventListener("click", checkMic);
ui.connCheck.addEventListener("click", checkConnection);
ui.start.addEventListener("click", startCall);
ui.end.addEventListener("click", () => {
  if (!call.client && call.sessionId) { // reconnect gave up: still let the trainee reach their results
    location.href = cfg.resultUrl.replace("SESSION", encodeURIComponent(call.sessionId));
    return;
  }
  endCall();
});
ui.mute.addEventListener("click", () => {
  call.muted = !call.muted;
  call.client?.setMuted(call.muted);
  ui.mute.setAttribute("aria-pressed", String(call.muted));
  ui.mute.textContent = call.muted ? t("unmute") : t("mute");
  setState(call.client?.state || "idle");
});
ui.typedForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.typedText.value.trim();
  if (!text) return;
  if (!call.client || !call.client.sendText(text)) { notice(t("typed_needs_connection")); return; }
  line("trainee", text, { typed: true });
  setTurns(call.turns + 1);
  ui.typedText.value = "";
});
window.addEventListener("beforeunload", () => { if (call.client && !call.finished) call.client.abandon(); });

setTurns(0);
setState("idle");
// Expose for the browser tests and for debugging from the console.
window.lingechoCall = call;
