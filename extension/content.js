// On Airbnb's hosting pages: one button, "Send my Airbnb session to <server>". It reads
// nothing itself (a content script cannot read HttpOnly cookies); the service worker does.
(() => {
  if (document.getElementById("sync-airbnb-connect")) return;
  const host = document.createElement("div");
  host.id = "sync-airbnb-connect";
  host.style.cssText = "position:fixed;right:16px;bottom:16px;z-index:2147483647";
  const root = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = `
    .box{font:14px system-ui,sans-serif;background:#fff;color:#222;border:1px solid #ccc;
      border-radius:8px;padding:10px 12px;box-shadow:0 2px 8px rgba(0,0,0,.2);max-width:340px}
    button{font:inherit;background:#ff385c;color:#fff;border:0;border-radius:6px;
      padding:8px 12px;cursor:pointer}
    button[disabled]{opacity:.6;cursor:default}
    .result{margin-top:8px}
    .result.ok{color:#0a7d32}
    .result.fail{color:#b00020}`;
  const box = document.createElement("div");
  box.className = "box";
  const button = document.createElement("button");
  button.type = "button";
  const result = document.createElement("div");
  result.className = "result";
  result.setAttribute("role", "status");
  box.append(button, result);
  root.append(style, box);
  document.documentElement.append(host);

  function label(server) {
    if (!server) {
      button.textContent = "Set up sync-airbnb (extension options)";
      button.dataset.action = "options";
      return;
    }
    let name = server;
    try {
      name = new URL(server).host;
    } catch {}
    button.textContent = `Send my Airbnb session to ${name}`;
    button.dataset.action = "send";
  }

  chrome.runtime.sendMessage({ type: "label" }, (answer) => label(answer && answer.server));
  chrome.storage.onChanged.addListener((changes) => {
    if (changes.server) label(changes.server.newValue);
  });

  button.addEventListener("click", (event) => {
    // A click by the user, not one a page script made up.
    if (!event.isTrusted) return;
    if (button.dataset.action === "options") {
      chrome.runtime.sendMessage({ type: "options" });
      return;
    }
    button.disabled = true;
    result.className = "result";
    result.textContent = "Sending…";
    chrome.runtime.sendMessage({ type: "send" }, (answer) => {
      button.disabled = false;
      const ok = Boolean(answer && answer.ok);
      result.className = `result ${ok ? "ok" : "fail"}`;
      result.textContent = answer ? answer.message : "Not connected: the extension did not answer.";
    });
  });
})();
