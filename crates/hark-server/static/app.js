// Hark dashboard: small progressive enhancements. Every page works without this
// module; it only adds what needs a browser API.

// "Copy" buttons: <button data-copy="ID" hidden> copies the text of element ID.
// They stay hidden without JavaScript or a clipboard (HTTPS or localhost only).
for (const button of document.querySelectorAll("button[data-copy]")) {
  const target = document.getElementById(button.dataset.copy);
  if (!target || !navigator.clipboard) continue;
  button.hidden = false;
  button.addEventListener("click", async () => {
    const text = target.innerText.trim();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed: select the text instead";
    }
  });
}
