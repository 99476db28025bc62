// Playground: send one message to two or three models at once; each column streams its reply through the API
// (tf.streamChat, signed in by the session) and keeps its own conversation. Ctrl+Enter sends.
"use strict";
(function () {
  const form = document.getElementById("pg");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const columns = [...form.querySelectorAll(".pg-col")].map((el) => ({el, history: [], controller: null}));
  const send = $("pg-send"), stop = $("pg-stop"), status = $("pg-status"), message = $("pg-message");

  const active = () => columns.slice(0, Number($("pg-count").value));
  const modelOf = (col) => col.el.querySelector(".pg-custom").value.trim() || col.el.querySelector(".pg-model").value;

  function showColumns() {
    columns.forEach((col, i) => { col.el.hidden = i >= Number($("pg-count").value); });
  }

  // A field's own error line (empty message: none).
  function fieldError(input, text) {
    const line = $(`${input.id}-error`);
    line.textContent = text; line.hidden = !text;
    if (text) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    return !text;
  }

  function readSettings() {
    const t = $("pg-temperature"), m = $("pg-max-tokens");
    const temperature = Number(t.value), maxTokens = Number(m.value);
    const ok = [
      fieldError(t, t.value !== "" && temperature >= 0 && temperature <= 2 ? "" : "A number from 0 to 2."),
      fieldError(m, Number.isInteger(maxTokens) && maxTokens >= 1 && maxTokens <= Number(m.max)
        ? "" : `A whole number from 1 to ${m.max}.`),
      fieldError(message, message.value.trim() ? "" : "Write a message first."),
    ].every(Boolean);
    return ok && {temperature, max_tokens: maxTokens, system: $("pg-system").value.trim()};
  }

  function bubble(col, role, label, text) {
    const el = document.createElement("article");
    el.className = `pg-msg ${role}`;
    const who = document.createElement("h3"); who.className = "pg-who"; who.textContent = label;
    const body = document.createElement("div"); body.className = "pg-text"; body.textContent = text;
    el.append(who, body);
    col.el.querySelector(".pg-transcript").append(el);
    return el;
  }

  function note(el, className, text) {
    const p = document.createElement("p"); p.className = className; p.textContent = text;
    el.append(p);
    return p;
  }

  // Keep the newest text in view while it streams, unless the reader scrolled up to read.
  function follow(col) {
    const box = col.el.querySelector(".pg-transcript");
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
  }

  const seconds = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);

  // Latency, time to first token, tokens per second (completion tokens over the whole call) and usage.
  function metrics(result) {
    const parts = [`latency ${seconds(result.ms)}`];
    if (result.ttft_ms !== null) parts.push(`first token ${seconds(result.ttft_ms)}`);
    const u = result.usage;
    if (u) {
      if (u.completion_tokens && result.ms > 0) parts.push(`${(u.completion_tokens / (result.ms / 1000)).toFixed(1)} tokens/s`);
      parts.push(`${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens`);
    }
    return parts.join(" · ");
  }

  async function ask(col, text, settings) {
    const model = modelOf(col), history = col.history;  // Clear starts a new history: this turn keeps to its own
    history.push({role: "user", content: text});
    bubble(col, "user", "You", text);
    const reply = bubble(col, "assistant", model, "");
    const body = reply.querySelector(".pg-text");
    reply.setAttribute("aria-busy", "true");
    reply.dataset.chunks = "0";
    const messages = settings.system ? [{role: "system", content: settings.system}, ...history] : [...history];
    col.controller = new AbortController();
    let sofar = "";
    try {
      if (!model) throw new Error("Choose a model for this column.");
      const result = await tf.streamChat(
        {model, messages, temperature: settings.temperature, max_tokens: settings.max_tokens},
        (delta, all) => {
          sofar = all; body.textContent = all;
          reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
          follow(col);
        },
        col.controller.signal);
      history.push({role: "assistant", content: result.text});
      if (!result.text) note(reply, "muted", "(an empty reply)");
      note(reply, "pg-stats help", metrics(result));
      reply.dataset.done = "ok";
    } catch (e) {
      if (e.name === "AbortError" && sofar) {  // stopped: what arrived stays in the conversation
        history.push({role: "assistant", content: sofar});
        note(reply, "muted", "Stopped.");
      } else {
        history.pop();  // this turn got no answer: it is not sent again
        const p = note(reply, "error", e.name === "AbortError" ? "Stopped before any reply." : `Error: ${e.message}`);
        p.setAttribute("role", "alert");
      }
      reply.dataset.done = "error";
    } finally {
      reply.removeAttribute("aria-busy");
      col.controller = null;
    }
  }

  async function sendAll() {
    if (send.disabled) return;
    const settings = readSettings();
    if (!settings) return;
    const text = message.value;
    message.value = "";
    send.disabled = true; stop.disabled = false; status.textContent = "Streaming…";
    const started = performance.now();
    await Promise.allSettled(active().map((col) => ask(col, text, settings)));
    send.disabled = false; stop.disabled = true;
    status.textContent = `All replies in (${seconds(performance.now() - started)}).`;
    message.focus();
  }

  function stopAll() { columns.forEach((col) => col.controller && col.controller.abort()); }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); sendAll(); });
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); sendAll(); }
  });
  stop.addEventListener("click", stopAll);
  $("pg-clear").addEventListener("click", () => {
    stopAll();
    columns.forEach((col) => { col.history = []; col.el.querySelector(".pg-transcript").replaceChildren(); });
    status.textContent = "Cleared.";
    message.focus();
  });
  $("pg-count").addEventListener("change", showColumns);
  showColumns();
})();
