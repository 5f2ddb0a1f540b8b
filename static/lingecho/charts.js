// Tiny SVG charts drawn by hand (no chart library): a who-spoke-when timeline and a score line.
// Each chart also has a text equivalent on the page (transcript, table), so these are decoration
// for sighted users, marked role="img" with a label by the template.

import { mmss, t } from "./util.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Two lanes (trainee, buyer) of speech segments over the call. Returns {setTime(ms)} to move the
 * playhead. Clicking the chart calls onSeek(ms).
 */
export function timelineChart(container, segments, durationMs, { onSeek } = {}) {
  const width = 800, lane = 22, top = 8, left = 70, height = top + lane * 2 + 28;
  const total = Math.max(durationMs, ...segments.map((s) => s.end_ms), 1000);
  const x = (ms) => left + ((width - left - 10) * ms) / total;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "timeline-svg", "aria-hidden": "true" });
  const lanes = [["trainee", t("trainee_lane")], ["buyer", t("buyer_lane")]];
  lanes.forEach(([speaker, label], i) => {
    const y = top + i * lane;
    root.append(svg("text", { x: 4, y: y + lane * 0.7, class: "lane-label" }, label));
    root.append(svg("rect", { x: left, y: y + 3, width: width - left - 10, height: lane - 6, class: "lane-bg" }));
    for (const s of segments.filter((seg) => seg.speaker === speaker)) {
      const w = Math.max(2, x(s.end_ms) - x(s.start_ms));
      const r = svg("rect", { x: x(s.start_ms), y: y + 3, width: w, height: lane - 6, class: `seg ${speaker}` });
      r.append(svg("title", {}, `${label} ${mmss(s.start_ms)}–${mmss(s.end_ms)}`));
      root.append(r);
    }
  });
  const ticks = Math.min(10, Math.max(2, Math.round(total / 10000)));
  for (let i = 0; i <= ticks; i++) {
    const ms = (total * i) / ticks;
    root.append(svg("text", { x: x(ms), y: height - 6, class: "tick", "text-anchor": "middle" }, mmss(ms)));
  }
  const head = svg("line", { x1: left, x2: left, y1: top, y2: top + lane * 2, class: "playhead" });
  root.append(head);
  if (onSeek) {
    root.style.cursor = "pointer";
    root.addEventListener("click", (ev) => {
      const box = root.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * width;
      if (px >= left) onSeek(Math.max(0, ((px - left) / (width - left - 10)) * total));
    });
  }
  container.replaceChildren(root);
  return {
    setTime(ms) {
      const px = x(Math.min(ms, total));
      head.setAttribute("x1", px);
      head.setAttribute("x2", px);
    },
  };
}

/** Scores (0..100) over time, one point per scored call, oldest on the left. */
export function scoreLineChart(container, points) {
  const width = 800, height = 240, left = 36, bottom = 28, top = 10, right = 12;
  const y = (v) => top + (height - top - bottom) * (1 - v / 100);
  const n = points.length;
  const x = (i) => left + (n <= 1 ? (width - left - right) / 2 : ((width - left - right) * i) / (n - 1));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "line-svg", "aria-hidden": "true" });
  for (const v of [0, 25, 50, 75, 100]) {
    root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, String(v)));
  }
  if (n > 1) {
    root.append(svg("polyline", { points: points.map((p, i) => `${x(i)},${y(p.score)}`).join(" "), class: "score-line" }));
  }
  points.forEach((p, i) => {
    const dot = svg("circle", { cx: x(i), cy: y(p.score), r: 5, class: "score-dot" });
    dot.append(svg("title", {}, `${p.date} · ${p.scenario} · ${t("score")} ${p.score}`));
    root.append(dot);
  });
  const step = Math.max(1, Math.ceil(n / 8));
  points.forEach((p, i) => {
    if (i % step === 0 || i === n - 1) root.append(svg("text", { x: x(i), y: height - 8, "text-anchor": "middle", class: "tick" }, p.date.slice(5)));
  });
  container.replaceChildren(root);
}
