// A fine-tune's page: draw its loss curve, then follow the job live (tf.live: /jobs/ID/live) while it runs:
// training steps extend the curve and the progress line, every event is added to the list, and the outcome card
// (status, model id, checkpoints) is fetched again when anything but a training step happens. No reloads.
"use strict";
(function () {
  // Copy a model id (the input stays selectable for browsers without clipboard access).
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-copy]");
    if (!button) return;
    const input = document.getElementById(button.dataset.copy);
    const said = document.querySelector(`[data-copied="${button.dataset.copy}"]`);
    input.select();
    let ok = false;
    try {
      await navigator.clipboard.writeText(input.value);
      ok = true;
    } catch (e) {
      ok = document.execCommand && document.execCommand("copy");
    }
    if (said) said.textContent = ok ? "Copied." : "Selected: press Ctrl+C to copy.";
  });

  const dataEl = document.getElementById("ft-data");
  if (!dataEl) return;
  const d = JSON.parse(dataEl.textContent);
  const chart = document.getElementById("ft-chart");
  let lastSeq = d.last_seq, drawPending = false;

  function draw() {
    drawPending = false;
    const series = [{name: "training loss", points: d.train}];
    if (d.valid.length) series.push({name: "validation loss", points: d.valid});
    tf.lineChart(chart, series, {label: "Loss per training step", empty: "No training steps yet: the curve is drawn as they arrive."});
  }
  function drawSoon() {
    if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
  }
  function keep(points, point) {
    points.push(point);
    if (points.length > d.max_points) points.shift();
  }

  function showProgress(m) {
    let text = `Step ${m.step} of ${m.total_steps} · epoch ${m.epoch} · training loss ${Number(m.train_loss).toFixed(4)}`;
    if (m.valid_loss !== undefined) text += ` · validation loss ${Number(m.valid_loss).toFixed(4)}`;
    document.getElementById("ft-progress").textContent = `${text} · ${m.tokens_per_s} tokens/s`;
    const bar = document.getElementById("ft-progress-bar");
    bar.max = m.total_steps; bar.value = m.step;
  }

  function addEvent(e) {
    if (!d.follow_events) return;  // an older page of events stays as it is
    const when = new Date(e.created_at * 1000).toISOString().replace("T", " ").slice(0, 19);
    const row = document.createElement("tr");
    row.innerHTML = [when, e.level, e.type, e.message].map((v) => `<td>${tf.esc(v)}</td>`).join("");
    document.getElementById("ft-events").prepend(row);
    const none = document.getElementById("ft-no-events");
    if (none) none.remove();
  }

  // The outcome card again, once at a time (a request asked for meanwhile runs after it).
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(`/fine-tunes/${encodeURIComponent(d.job_id)}/outcome`, {credentials: "same-origin"});
      if (res.redirected) { location.href = res.url; return; }  // signed out meanwhile
      const card = document.getElementById("ft-outcome");
      if (res.ok && card) card.outerHTML = await res.text();
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  function setStatus(status) {
    const badge = document.getElementById("ft-status");
    if (badge) { badge.textContent = status; badge.className = `badge ${status}`; }
  }

  draw();
  if (!d.active) return;
  tf.live(d.job_id, {
    event(e) {
      if (e.seq <= lastSeq) return;  // rendered with the page already
      lastSeq = e.seq;
      addEvent(e);
      const m = e.data || {};
      if (e.type === "metrics" && m.step !== undefined) {
        if (m.train_loss !== undefined) keep(d.train, [m.step, m.train_loss]);
        if (m.valid_loss !== undefined) keep(d.valid, [m.step, m.valid_loss]);
        showProgress(m);
        drawSoon();
      } else {
        refresh();
      }
    },
    status(s) { setStatus(s.status); refresh(); },
    end(s) { setStatus(s.status); refresh(); },
  }, {after: lastSeq});
})();
