// A merge's or a bake-off's page: follow the job live (tf.live: /jobs/ID/live) while it has not ended. Its events
// replace the list drawn with the page (newest first, the last 100 kept), progress metrics update a line, and the
// page reloads once the job ends, to show what it made.
"use strict";
(function () {
  const card = document.getElementById("job-live");
  if (!card || card.dataset.final === "True") return;
  const list = document.getElementById("job-events");
  const progress = document.getElementById("job-progress");
  let fresh = true;
  tf.live(card.dataset.job, {
    event: (e) => {
      if (e.type === "metrics") {
        const d = e.data || {};
        if (d.step !== undefined && d.total) progress.textContent = `step ${d.step} of ${d.total}`;
        return;
      }
      if (fresh) { list.innerHTML = ""; fresh = false; }
      const none = document.getElementById("job-no-events");
      if (none) none.remove();
      const when = new Date(e.created_at * 1000).toISOString().replace("T", " ").slice(0, 19);
      const row = document.createElement("tr");
      row.innerHTML = [when, e.level, e.message].map((v) => `<td>${tf.esc(v)}</td>`).join("");
      list.prepend(row);
      while (list.children.length > 100) list.lastElementChild.remove();
    },
    status: (s) => { document.getElementById("job-status").textContent = s.status; },
    end: () => window.location.reload(),
  });
})();
