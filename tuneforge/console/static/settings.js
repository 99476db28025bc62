// Settings: the copy button beside a new API key (shown once).
"use strict";
document.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-copy]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  const said = button.parentElement.querySelector(".copied");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    said.textContent = "Copied.";
  } catch (e) {  // no clipboard access (e.g. plain http on another host): the text is selected for Ctrl+C
    said.textContent = "Selected: press Ctrl+C to copy.";
  }
});
