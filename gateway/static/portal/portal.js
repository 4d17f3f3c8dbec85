// Copy buttons: <button data-copy-target="id-of-an-input">. No other script on the portal.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copyTarget);
  const status = button.parentElement.querySelector(".copy-status");
  try {
    await navigator.clipboard.writeText(field.value);
  } catch (error) {
    // No clipboard API (a page not served over HTTPS): copy the selected text instead.
    field.select();
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  if (status) status.textContent = "The key is on your clipboard.";
});
