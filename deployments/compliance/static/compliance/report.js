// "Print / save as PDF" on the compliance pages (a file, not inline script, for the CSP).
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print]")) {
    window.print();
  }
});
