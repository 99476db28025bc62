// tuneforge console: the small shared helpers the pages use (no framework; htmx does the partial updates).
"use strict";
window.tf = (function () {
  const csrf = () => {
    const h = document.body.getAttribute("hx-headers");
    return h ? JSON.parse(h)["X-CSRF-Token"] : "";
  };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const COLORS = ["#0550ae", "#bc4c00", "#116329", "#8250df", "#a40e26", "#1b7c83"];

  // A line chart as inline SVG: series = [{name, points: [[x, y], ...]}]. Redraw it by calling again.
  function lineChart(el, series, opts = {}) {
    const W = 640, H = 240, L = 52, R = 12, T = 12, B = 30;
    const pts = series.flatMap((s) => s.points);
    if (!pts.length) { el.innerHTML = `<p class="muted">${esc(opts.empty || "No points yet.")}</p>`; return; }
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => T + (y1 - y) / (y1 - y0) * (H - T - B);
    let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.label || "chart")}">`;
    for (let i = 0; i <= 4; i++) {
      const y = y0 + (y1 - y0) * i / 4;
      svg += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#d0d7de" stroke-width="1"/>`;
      svg += `<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${y.toPrecision(3)}</text>`;
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + (x1 - x0) * i / 4;
      const shown = Number.isInteger(x) ? x : (pts.every((p) => Number.isInteger(p[0])) ? Math.round(x) : x.toFixed(1));
      svg += `<text x="${sx(x)}" y="${H - 10}" text-anchor="middle">${shown}</text>`;
    }
    series.forEach((s, i) => {
      const c = s.color || COLORS[i % COLORS.length];
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      svg += `<path d="${d}" fill="none" stroke="${c}" stroke-width="2"/>`;
      s.points.forEach((p) => { svg += `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="2.5" fill="${c}"><title>${esc(s.name)} ${p[0]}: ${p[1]}</title></circle>`; });
    });
    svg += "</svg>";
    const legend = series.map((s, i) => `<span><i style="background:${s.color || COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("");
    el.innerHTML = svg + `<div class="legend">${legend}</div>`;
  }

  // Follow a job's live events (server-sent events from /jobs/ID/live): handlers.event(e), .status(s), .end(s);
  // opts.after: the last event already shown (its seq), so the server starts after it.
  function live(jobId, handlers, opts = {}) {
    const after = opts.after ? `?after=${encodeURIComponent(opts.after)}` : "";
    const source = new EventSource(`/jobs/${encodeURIComponent(jobId)}/live${after}`);
    source.addEventListener("job_event", (m) => handlers.event && handlers.event(JSON.parse(m.data)));
    source.addEventListener("status", (m) => handlers.status && handlers.status(JSON.parse(m.data)));
    source.addEventListener("end", (m) => { source.close(); handlers.end && handlers.end(JSON.parse(m.data)); });
    return source;
  }

  // Stream a chat completion through the API (signed in by the session cookie + CSRF header):
  // onDelta(text) for each piece; resolves with {text, usage, ms}.
  async function streamChat(body, onDelta, signal) {
    const started = performance.now();
    const res = await fetch("/v1/chat/completions", {
      method: "POST", signal, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
      body: JSON.stringify({...body, stream: true, stream_options: {include_usage: true}}),
    });
    if (!res.ok) {
      let msg = `HTTP ${res.status}`;
      try { msg = (await res.json()).error.message || msg; } catch (e) { /* keep the status */ }
      throw new Error(msg);
    }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "", text = "", usage = null, first = null;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (first === null) first = performance.now() - started;
            text += delta.content; onDelta(delta.content, text);
          }
        }
      }
    }
    return {text, usage, ms: performance.now() - started, ttft_ms: first};
  }

  return {csrf, esc, lineChart, live, streamChat, COLORS};
})();
