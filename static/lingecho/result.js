// Results page while after-call processing runs: poll the session and reload once it is done.
import { api, readJson, t } from "./util.js";

const cfg = readJson("poll-config");
const fill = document.getElementById("proc-fill");
const text = document.getElementById("proc-text");
const bar = fill?.parentElement;
const started = Date.now();
let delay = 1500;

async function poll() {
  try {
    const s = await api(cfg.apiUrl);
    const pct = Math.max(0, Math.min(100, s.processing_progress || 0));
    fill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(pct));
    if (s.processing === "done" || s.processing === "failed") { location.reload(); return; }
    if (s.processing === "running") text.textContent = t("processing", { percent: pct });
    else if (Date.now() - started > 15000) text.textContent = t("processing_queued");
  } catch { /* a blip: keep polling, slower */ }
  delay = Math.min(10000, delay * 1.2);
  setTimeout(poll, delay);
}

if (fill) setTimeout(poll, 800);
