// Evals pages: a running eval's progress as it happens (tf.live over the run's job), then its results swapped
// in without a reload; the rows page's filter applies as soon as it is changed.
"use strict";
(function () {
  const MAX_EVENTS = 200;  // the newest events kept on the page

  function follow(box) {
    const bar = document.getElementById("run-progress"), phase = document.getElementById("run-phase");
    const count = document.getElementById("run-count"), list = document.getElementById("run-events");
    const badge = document.getElementById("run-status");
    tf.live(box.dataset.job, {
      event(e) {
        const li = document.createElement("li");
        li.textContent = e.message;
        list.appendChild(li);
        while (list.children.length > MAX_EVENTS) list.removeChild(list.firstChild);
        list.scrollTop = list.scrollHeight;  // the newest in view
        const d = e.data || {};
        if (typeof d.total === "number" && d.total > 0) {
          bar.max = d.total; bar.value = Math.min(d.step || 0, d.total);
          count.textContent = `${d.step} of ${d.total}`;
          phase.textContent = e.message.replace(/: \d+\/\d+$/, "");
        } else {
          phase.textContent = e.message;
        }
      },
      status(s) {
        badge.textContent = s.status;
        badge.className = `badge ${s.status}`;
        box.dataset.status = s.status;
      },
      end(s) {
        const cancel = document.getElementById("run-cancel");
        if (cancel) cancel.remove();
        if (s.status === "succeeded") { bar.value = bar.max; phase.textContent = "Finished"; }
        else phase.textContent = `Ended: ${s.status}`;
        fetch(box.dataset.results, {credentials: "same-origin"})
          .then((r) => r.text())
          .then((html) => { document.getElementById("results").innerHTML = html; box.dataset.done = "1"; });
      },
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("run-live");
    if (box) follow(box);
    const show = document.getElementById("f-show");
    if (show) show.addEventListener("change", () => show.form.submit());
  });
})();
