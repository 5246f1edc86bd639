// Options: the server and the connect token, or a connect link that holds both
// (<server>/connect#token=<token>; the token is in the fragment, which no browser sends
// to a server). Saved in chrome.storage.local; no cookie is ever stored.
const $ = (id) => document.getElementById(id);

// {server, token} of a connect link, or null.
function parseLink(text) {
  let url;
  try {
    url = new URL(text.trim());
  } catch {
    return null;
  }
  const token = new URLSearchParams(url.hash.replace(/^#/, "")).get("token");
  if (!token || !/^https?:$/.test(url.protocol)) return null;
  const base = url.pathname.replace(/\/connect\/?$/, "").replace(/\/$/, "");
  return { server: `${url.origin}${base}`, token };
}

// The server as an origin plus path, without a trailing slash, or null.
function normalServer(text) {
  try {
    const url = new URL(text.trim());
    if (!/^https?:$/.test(url.protocol)) return null;
    return `${url.origin}${url.pathname.replace(/\/$/, "")}`;
  } catch {
    return null;
  }
}

function show(text) {
  $("status").textContent = text;
}

$("link").addEventListener("input", () => {
  const parsed = parseLink($("link").value);
  if (parsed) {
    $("server").value = parsed.server;
    $("token").value = parsed.token;
    show("The link's server and token are filled in: press Save.");
  }
});

$("save").addEventListener("click", async () => {
  const server = normalServer($("server").value);
  const token = $("token").value.trim();
  if (!server || !token) {
    show("Give a server URL (http or https) and a connect token.");
    return;
  }
  await chrome.storage.local.set({ server, token });
  show(`Saved: the button on Airbnb's hosting pages sends your session to ${new URL(server).host}.`);
  // Ask for the server's origin (an optional host permission) while the click counts as
  // the user's gesture. Without it the request still works where the server's CORS
  // settings (ADMIN_CONNECT_ORIGINS) name this extension, so a refusal is not fatal and
  // the save above does not wait for the prompt.
  chrome.permissions.request({ origins: [`${new URL(server).origin}/*`] }).catch(() => {});
});

chrome.storage.local.get(["server", "token"]).then(({ server = "", token = "" }) => {
  $("server").value = server;
  $("token").value = token;
});
