// The service worker: the only part that reads cookies or talks to the server.
//
// A click on the button (content.js, on https://www.airbnb.com/hosting/*) asks it to
// "send". It reads the airbnb.com cookies with chrome.cookies, keeps the auth group only
// (the list below is shared/airbnb/cookies.py's AUTH_COOKIES; tests/unit/test_extension.py
// checks that they agree), takes the host id from _user_attributes and the browser's user
// agent, and posts them to <server>/api/v1/connect with the connect token. Nothing of the
// cookies is stored: they live in this function's variables for the one request.

const AUTH_COOKIES = [
  "_airbed_session_id",
  "_aaj",
  "_aat",
  "auth_jitney_session_id",
  "hli",
  "li",
  "_user_attributes",
  "bev",
];
const AIRBNB = "https://www.airbnb.com/";
const HOSTING = /^https:\/\/www\.airbnb\.com\/hosting(\/|$)/;

async function settings() {
  const { server = "", token = "" } = await chrome.storage.local.get(["server", "token"]);
  return { server, token };
}

// The host id of _user_attributes (URL-encoded JSON, id_str), or null.
function hostId(cookies) {
  const attrs = cookies.find((c) => c.name === "_user_attributes");
  if (!attrs) return null;
  try {
    const parsed = JSON.parse(decodeURIComponent(attrs.value));
    const id = parsed.id_str ?? parsed.id;
    return typeof id === "string" || typeof id === "number" ? String(id) : null;
  } catch {
    return null;
  }
}

function reasonOf(status, body) {
  const detail = body && typeof body.detail === "string" ? body.detail : "";
  // The server's own words for a token it refuses: unknown, expired or revoked.
  if (status === 401) return detail || "the connect link is not valid; ask for a new one";
  if (status === 422 && body && body.error === "credentials_rejected") {
    return `Airbnb did not accept this session (${detail}). Log in to Airbnb again and retry`;
  }
  if (status === 503) return `the server could not check the session now (${detail}); try again later`;
  return detail || `the server answered ${status}`;
}

async function send() {
  const { server, token } = await settings();
  if (!server || !token) {
    return { ok: false, message: "Set the server and the connect token in the extension's options first." };
  }
  const all = await chrome.cookies.getAll({ url: AIRBNB });
  const auth = all
    .filter((c) => AUTH_COOKIES.includes(c.name))
    .map((c) => ({ name: c.name, value: c.value }));
  const accountId = hostId(auth);
  if (!accountId || !auth.some((c) => c.name === "_aat")) {
    return { ok: false, message: "You are not logged in to Airbnb in this browser: log in, then retry." };
  }
  let resp;
  try {
    resp = await fetch(`${server}/api/v1/connect`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({
        cookies: auth,
        account_id: accountId,
        user_agent: navigator.userAgent,
      }),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    return { ok: false, message: `The server ${server} could not be reached (${err.message}).` };
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (resp.ok && body) {
    const n = body.listings;
    const what = n === null || n === undefined ? "" : ` with ${n} listing${n === 1 ? "" : "s"}`;
    return { ok: true, message: `Connected${what}: Airbnb account ${body.account_id}.`, listings: n };
  }
  return { ok: false, message: `Not connected: ${reasonOf(resp.status, body)}.` };
}

chrome.runtime.onMessage.addListener((message, sender, reply) => {
  // Only this extension's own pages and its content script on Airbnb's hosting pages.
  if (sender.id !== chrome.runtime.id) return false;
  const fromHosting = sender.tab && HOSTING.test(sender.url || "");
  if (message && message.type === "label") {
    settings().then(({ server }) => reply({ server }));
    return true;
  }
  if (message && message.type === "send" && fromHosting) {
    send().then(reply, (err) => reply({ ok: false, message: `Not connected: ${err.message}` }));
    return true;
  }
  if (message && message.type === "options") {
    chrome.runtime.openOptionsPage();
  }
  return false;
});
