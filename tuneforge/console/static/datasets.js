// The datasets pages: the upload form refuses a file over the server's cap before sending it (the same message
// the server would show, beside the file field), and a dataset being relabeled follows its job live
// (tf.live: /jobs/ID/live): the count of answers and the job's status update, and the page reloads once it ends.
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  if (form) {
    form.addEventListener("submit", (ev) => {
      const input = document.getElementById("f-file");
      const max = Number(input.dataset.maxBytes);
      const file = input.files && input.files[0];
      if (!file || !max || file.size <= max) return;
      ev.preventDefault();
      const mb = (n) => (n / 1048576).toFixed(1);
      document.getElementById("f-file-error").innerHTML =
        `<p class="error">${tf.esc(file.name)} is ${mb(file.size)} MB: the upload limit is ${mb(max)} MB. ` +
        "Split the file, or ask the operator to raise TUNEFORGE_MAX_UPLOAD_MB.</p>";
      input.setAttribute("aria-invalid", "true");
      input.focus();
    });
  }

  const live = document.getElementById("relabel-live");
  if (live) {
    tf.live(live.dataset.job, {
      event: (e) => {
        if (e.data && e.data.answered !== undefined) live.textContent = `${e.data.answered} of ${e.data.total} answered`;
        else if (e.data && e.data.total !== undefined) live.textContent = e.message;
      },
      status: (s) => { document.getElementById("job-status").textContent = s.status; },
      end: () => window.location.reload(),
    });
  }
})();
