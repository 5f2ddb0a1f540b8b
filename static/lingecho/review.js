// Session review: the recording with the transcript in sync (current line highlighted, click a line
// to seek), the who-spoke-when timeline, the manager's score override and timestamped comments.
import { timelineChart } from "./charts.js";
import { api, el, readJson, t } from "./util.js";

const cfg = readJson("review-config");
const audio = document.getElementById("recording");
const lines = [...document.querySelectorAll("#review-transcript .utt")].map((li) => ({
  li, start: Number(li.dataset.start), end: Number(li.dataset.end), speaker: li.classList.contains("buyer") ? "buyer" : "trainee",
}));

function seek(ms) {
  if (!audio) return;
  audio.currentTime = ms / 1000;
  audio.play().catch(() => {});
}

// ------------------------------------------------------------------ timeline
let segments = readJson("timeline-data", []);
if (!segments.length) segments = lines.map((l) => ({ speaker: l.speaker, start_ms: l.start, end_ms: Math.max(l.start, l.end) }));
const timelineBox = document.getElementById("timeline");
let timeline = null;
function drawTimeline() {
  const duration = audio && Number.isFinite(audio.duration) ? audio.duration * 1000 : 0;
  if (timelineBox && (segments.length || duration)) timeline = timelineChart(timelineBox, segments, duration, { onSeek: audio ? seek : null });
}
drawTimeline();
audio?.addEventListener("loadedmetadata", drawTimeline);

// ------------------------------------------------------------------ transcript sync
let current = null;
function highlight() {
  const ms = audio.currentTime * 1000;
  timeline?.setTime(ms);
  let found = null;
  for (const l of lines) if (l.start <= ms && ms <= Math.max(l.end, l.start + 300)) found = l;
  if (found === current) return;
  current?.li.classList.remove("current");
  current?.li.removeAttribute("aria-current");
  current = found;
  if (current) {
    current.li.classList.add("current");
    current.li.setAttribute("aria-current", "true");
    current.li.scrollIntoView({ block: "nearest" });
  }
}
if (audio) {
  audio.addEventListener("timeupdate", highlight);
  audio.addEventListener("seeked", highlight);
}
document.querySelectorAll("#review-transcript button.seek").forEach((b) => {
  if (!audio) { b.disabled = true; return; }
  b.addEventListener("click", () => seek(Number(b.dataset.start)));
});

// comment timestamps become seek buttons too
function clockToMs(text) {
  const m = /^(\d+):(\d{2})$/.exec(text.trim());
  return m ? (Number(m[1]) * 60 + Number(m[2])) * 1000 : null;
}
function msToClock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function linkComment(li) {
  const ts = li.querySelector(".ts");
  if (!audio || !ts || ts.tagName === "BUTTON") return;
  const btn = el("button", { type: "button", class: "ts seek-link", text: ts.textContent });
  btn.addEventListener("click", () => seek(Number(li.dataset.offset)));
  ts.replaceWith(btn);
}
document.querySelectorAll("#comments .comment").forEach(linkComment);

// ------------------------------------------------------------------ comments
const form = document.getElementById("comment-form");
if (form) {
  const at = document.getElementById("comment-at");
  const status = document.getElementById("comment-status");
  document.getElementById("comment-now").addEventListener("click", () => {
    if (audio) at.value = msToClock(audio.currentTime * 1000);
    at.focus();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const offset = clockToMs(at.value);
    const text = form.elements.text.value.trim();
    if (offset === null || !text) return;
    try {
      const c = await api(cfg.commentUrl, { method: "POST", body: { offset_ms: offset, text } });
      const list = document.getElementById("comments");
      list.querySelector(".empty")?.remove();
      const li = el("li", { class: "comment", "data-offset": String(c.offset_ms) },
        el("span", { class: "ts", text: msToClock(c.offset_ms) }), " ", el("strong", { text: c.author }), ": ",
        el("span", { class: "text", text: c.text }));
      const after = [...list.children].find((x) => Number(x.dataset.offset) > c.offset_ms);
      list.insertBefore(li, after || null);
      linkComment(li);
      form.elements.text.value = "";
      status.textContent = t("comment_saved");
      status.className = "status-line good";
    } catch (err) {
      status.textContent = t("comment_failed", { detail: err.message });
      status.className = "status-line bad";
    }
  });
}

// ------------------------------------------------------------------ score override
const override = document.getElementById("override-form");
if (override) {
  override.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = document.getElementById("override-status");
    const scores = {};
    let total = null;
    for (const input of override.querySelectorAll("input[type=number]")) {
      if (input.value === "") continue;
      if (input.name === "__total") total = Number(input.value);
      else scores[input.name] = Number(input.value);
    }
    try {
      const a = await api(cfg.overrideUrl, { method: "POST", body: { scores, total } });
      status.textContent = t("override_saved");
      status.className = "status-line good";
      const shown = document.getElementById("total-score");
      if (shown && a.effective_total != null) shown.textContent = Math.round(a.effective_total);
    } catch (err) {
      status.textContent = t("override_failed", { detail: err.message });
      status.className = "status-line bad";
    }
  });
}
