// The dashboard: one page over the admin's read API, routed by the URL's hash.
//
//   #/portfolio?customer_id=&drop_threshold=   every listing, 7 and 28 days against the prior ones
//   #/listing/{account_id}/{listing_id}?to=&days=   page views and conversion, the forward demand
//   #/accounts?offset=                          status, credentials, recent jobs
//
// Every string from the API (listing names come from Airbnb) reaches the DOM as a text node or
// an attribute value, never as markup: el() below is the only way nodes are built, and no chart
// is given a string from the API (plotly reads pseudo-HTML in its labels).
"use strict";

(() => {
  const API = "/api/v1";
  const KEY_STORE = "sync-airbnb.api-key";
  const DASH = "\u2013";
  // Forward demand: one line per scrape day, the latest ones only (a year of scrapes would be
  // 365 lines); the chart says how many it leaves out.
  const FORWARD_SCRAPES = 6;
  const FORWARD_DAYS = 90;
  const LISTING_DAYS = 91;
  const JOB_REFRESH_MS = 5000;
  const FINAL_JOBS = new Set(["succeeded", "partial", "failed"]);

  // --- DOM -------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  const main = document.getElementById("main");
  const keyPanel = document.getElementById("key-panel");
  const keyError = document.getElementById("key-error");
  const keyInput = document.getElementById("key-input");
  const forgetKey = document.getElementById("forget-key");

  // replaceChildren() would show a null as the text "null".
  function show(...nodes) {
    main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  }

  function setState(state) {
    document.body.dataset.state = state;
  }

  // --- formats and dates ------------------------------------------------------------------

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtCount = (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH);
  const fmtRate = (v) => (isNum(v) ? (v * 100).toFixed(2) + "%" : DASH);
  const fmtChange = (v) => (isNum(v) ? (v > 0 ? "+" : "") + (v * 100).toFixed(1) + "%" : DASH);
  const fmtTime = (v) => (v ? v.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC") : DASH);

  const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
  const isoDate = (d) => d.toISOString().slice(0, 10);
  const parseDate = (s) => new Date(s + "T00:00:00Z");
  function addDays(s, n) {
    const d = parseDate(s);
    d.setUTCDate(d.getUTCDate() + n);
    return isoDate(d);
  }
  // ISO weeks (Monday..Sunday), as the API's weekly periods.
  function mondayOnOrAfter(s) {
    const dow = (parseDate(s).getUTCDay() + 6) % 7;
    return dow === 0 ? s : addDays(s, 7 - dow);
  }
  const yesterday = () => addDays(isoDate(new Date()), -1);

  // --- the API ----------------------------------------------------------------------------

  class KeyRefused extends Error {
    constructor(status, body) {
      super(body && body.detail ? body.detail : "no API key");
      this.status = status;
      this.body = body;
    }
  }

  class ApiFailed extends Error {
    constructor(status, body, path) {
      super(`${path}: ${status} ${body && body.error ? body.error : ""}`);
      this.status = status;
      this.body = body;
      this.path = path;
    }
  }

  const apiKey = {
    get: () => sessionStorage.getItem(KEY_STORE),
    set: (value) => sessionStorage.setItem(KEY_STORE, value),
    clear: () => sessionStorage.removeItem(KEY_STORE),
  };

  async function api(path, params) {
    const key = apiKey.get();
    if (!key) throw new KeyRefused(null, null);
    const url = new URL(API + path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
    }
    const resp = await fetch(url, { headers: { "X-API-Key": key, Accept: "application/json" } });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (resp.status === 401 || resp.status === 403) {
      apiKey.clear();
      throw new KeyRefused(resp.status, body);
    }
    if (!resp.ok) throw new ApiFailed(resp.status, body, path);
    return body;
  }

  const enc = encodeURIComponent;

  // --- the key ----------------------------------------------------------------------------

  function askForKey(refused) {
    main.replaceChildren();
    keyPanel.hidden = false;
    forgetKey.hidden = true;
    if (refused && refused.status) {
      // 401: not a key of this admin, or revoked; 403: a key whose scope does not allow the
      // page's calls (services/admin/scopes.py). Both are dropped and a key asked again.
      keyError.textContent =
        refused.status === 401 && refused.body && refused.body.error === "invalid_api_key"
          ? "That API key was refused (401: not a valid key of this admin, or revoked). Enter a valid key."
          : refused.status === 403
            ? "That API key was refused (403: its scope does not allow this page). Enter another key."
            : `The admin asked for a key (${refused.status}: ${refused.message}). Enter one.`;
      keyError.hidden = false;
      keyError.dataset.status = String(refused.status);
    } else {
      keyError.hidden = true;
      keyError.textContent = "";
    }
    keyInput.value = "";
    keyInput.focus();
    setState("key");
  }

  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = keyInput.value.trim();
    if (!value) return;
    apiKey.set(value);
    keyInput.value = "";
    route();
  });

  forgetKey.addEventListener("click", () => {
    apiKey.clear();
    askForKey(null);
  });

  // --- shared pieces ----------------------------------------------------------------------

  function figure(field, value, text, cls) {
    return el(
      "span",
      { class: cls || "fig", "data-field": field, "data-value": isNum(value) ? String(value) : "" },
      text,
    );
  }

  function sparkline(values, start) {
    const width = 112;
    const height = 28;
    const present = values.filter(isNum);
    const box = svg("svg", {
      class: "spark",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `page views per day from ${start}`,
      "data-points": values.length,
      "data-present": present.length,
    });
    if (!present.length) return box;
    const max = Math.max(...present, 1);
    const step = values.length > 1 ? (width - 2) / (values.length - 1) : 0;
    // A gap in the data is a gap in the line: one polyline per run of values.
    let run = [];
    const flush = () => {
      if (run.length) box.append(svg("polyline", { points: run.join(" ") }));
      run = [];
    };
    values.forEach((v, i) => {
      if (!isNum(v)) return flush();
      run.push(`${(1 + i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
    });
    flush();
    return box;
  }

  function chartBox(id, title, note) {
    return el(
      "section",
      { class: "chart-card" },
      el("h3", {}, title),
      note ? el("p", { class: "note" }, note) : null,
      el("div", { class: "chart", id: `chart-${id}`, "data-chart": id }),
    );
  }

  const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] };

  function plot(id, traces, yFormat, extra) {
    const div = document.getElementById(`chart-${id}`);
    const layout = Object.assign(
      {
        margin: { l: 56, r: 12, t: 8, b: 40 },
        height: 280,
        legend: { orientation: "h", y: -0.2 },
        yaxis: { tickformat: yFormat, rangemode: "tozero", automargin: true },
        xaxis: { automargin: true },
        hovermode: "x unified",
      },
      extra || {},
    );
    div.dataset.points = String(traces.reduce((n, t) => n + t.x.length, 0));
    return Plotly.newPlot(div, traces, layout, PLOT_CONFIG).then(() => {
      div.dataset.drawn = "true";
    });
  }

  // --- portfolio --------------------------------------------------------------------------

  const PERIODS = [7, 28];
  const METRICS = [
    ["page_views", "Page views", fmtCount],
    ["conversion_rate", "Conversion", fmtRate],
  ];
  const LABELS = { page_views: "page views", conversion_rate: "conversion" };
  const FLAG_TEXT = {
    page_views_7d: "views fell, 7 d",
    page_views_28d: "views fell, 28 d",
    conversion_rate_7d: "conversion fell, 7 d",
    conversion_rate_28d: "conversion fell, 28 d",
  };

  function periodCell(metric, side, n, fig, format, flagged) {
    const base = `${metric}.${side}`;
    return el(
      "td",
      { class: flagged ? "num drop" : "num", "data-label": `${LABELS[metric]}, ${side}, ${n} d` },
      figure(`${base}.last_${n}`, fig[`last_${n}`], format(fig[`last_${n}`])),
      el(
        "small",
        {},
        "prior ",
        figure(`${base}.prior_${n}`, fig[`prior_${n}`], format(fig[`prior_${n}`])),
        " ",
        figure(`${base}.change_${n}`, fig[`change_${n}`], fmtChange(fig[`change_${n}`]), "fig change"),
      ),
    );
  }

  async function renderPortfolio(query, isCurrent) {
    const customer = query.get("customer_id") || "";
    const threshold = query.get("drop_threshold") || "";
    const data = await api("/portfolio", { customer_id: customer, drop_threshold: threshold });
    if (!isCurrent()) return;

    const form = el(
      "form",
      { class: "controls", id: "portfolio-form" },
      el("label", {}, "Customer ", el("input", { name: "customer_id", value: customer, placeholder: "all" })),
      el(
        "label",
        {},
        "Flag a fall over ",
        el("input", {
          name: "drop_threshold",
          type: "number",
          min: "1",
          max: "100",
          step: "1",
          value: String(Math.round(data.drop_threshold * 100)),
        }),
        " %",
      ),
      el("button", { type: "submit" }, "Apply"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const q = new URLSearchParams();
      const c = form.elements.customer_id.value.trim();
      const pct = Number(form.elements.drop_threshold.value);
      if (c) q.set("customer_id", c);
      if (pct > 0) q.set("drop_threshold", String(pct / 100));
      window.location.hash = "#/portfolio" + (q.toString() ? "?" + q : "");
    });

    const flagged = data.listings.filter((l) => l.flags.length).length;
    const head = el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { rowspan: 2 }, "Listing"),
        METRICS.map(([, label]) => el("th", { colspan: 4, class: "group" }, label)),
        el("th", { rowspan: 2 }, "Page views, 28 d"),
      ),
      el(
        "tr",
        {},
        METRICS.map(() => PERIODS.map((n) => [el("th", {}, `own ${n} d`), el("th", {}, `similar ${n} d`)])),
      ),
    );
    const body = el(
      "tbody",
      {},
      data.listings.map((l) => {
        const href =
          `#/listing/${enc(l.account_id)}/${enc(l.airbnb_listing_id)}?to=${enc(data.end)}`;
        return el(
          "tr",
          {
            class: l.flags.length ? "flagged" : null,
            "data-listing-id": l.airbnb_listing_id,
            "data-account-id": l.account_id,
            "data-flags": l.flags.join(" "),
          },
          el(
            "td",
            { class: "name", "data-label": "listing" },
            el("a", { href, class: "listing-link" }, l.listing_name || l.airbnb_internal_name || l.airbnb_listing_id),
            el(
              "small",
              {},
              l.airbnb_internal_name && l.listing_name ? `${l.airbnb_internal_name} · ` : "",
              `${l.airbnb_listing_id} · account ${l.account_id}`,
              l.customer_id ? ` · customer ${l.customer_id}` : "",
            ),
            l.flags.length
              ? el(
                  "div",
                  { class: "flags" },
                  l.flags.map((f) => el("span", { class: "flag", "data-flag": f }, FLAG_TEXT[f] || f)),
                )
              : null,
          ),
          METRICS.map(([metric, , format]) =>
            PERIODS.map((n) => [
              periodCell(metric, "own", n, l[metric].own, format, l.flags.includes(`${metric}_${n}d`)),
              periodCell(metric, "similar", n, l[metric].similar, format, false),
            ]),
          ),
          el("td", { class: "trend", "data-label": "page views, 28 d" }, sparkline(l.trend.page_views, l.trend.start)),
        );
      }),
    );
    show(
      el("h2", {}, "Portfolio"),
      form,
      el(
        "p",
        { class: "summary", id: "portfolio-summary" },
        `${data.listings.length} listings${data.customer_id ? ` of customer ${data.customer_id}` : ""}, ` +
          `the 7 and 28 days to ${data.end} against the ones before` +
          `${data.as_of ? `, as scraped by ${data.as_of}` : ""}. ` +
          `${flagged} flagged: own page views or conversion fell by more than ` +
          `${Math.round(data.drop_threshold * 100)} %. Conversion over a period is the ` +
          "page-view-weighted mean of the daily rates.",
      ),
      el(
        "div",
        { class: "table-wrap" },
        el("table", { class: "portfolio", id: "portfolio", "data-end": data.end }, head, body),
      ),
      data.listings.length ? null : el("p", { class: "empty" }, "No listings yet."),
    );
  }

  // --- a listing --------------------------------------------------------------------------

  function seriesTraces(answer, kind) {
    const x = answer.points.map((p) => p.period_start);
    const bar = answer.granularity !== "day";
    const trace = (side, name, color) => ({
      type: bar ? "bar" : "scatter",
      mode: bar ? undefined : "lines+markers",
      marker: { size: 4, color },
      line: bar ? undefined : { color, width: 2 },
      name,
      x,
      y: answer.points.map((p) => p[side]),
      // how the API got each value (daily, sum_of_days, airbnb_window, view_weighted)
      customdata: answer.points.map((p) => p[`${side}_source`]),
      hovertemplate: (kind === "rate" ? "%{y:.3%}" : "%{y:,d}") + " (%{customdata})",
    });
    return [trace("own", "own", "#d6336c"), trace("similar", "similar listings", "#868e96")];
  }

  function forwardTraces(answer) {
    const days = new Map();
    for (const stay of answer.stay_dates) {
      for (const s of stay.scrapes) {
        const day = s.scraped_at.slice(0, 10);
        if (!days.has(day)) days.set(day, []);
        days.get(day).push({ stay: stay.stay_date, own: s.own, lead: s.lead_days, change: s.own_change });
      }
    }
    const all = [...days.keys()].sort();
    const kept = all.slice(-FORWARD_SCRAPES);
    const traces = kept.map((day) => {
      const pts = days.get(day);
      return {
        type: "scatter",
        mode: "lines+markers",
        marker: { size: 3 },
        name: `scraped ${day}`,
        x: pts.map((p) => p.stay),
        y: pts.map((p) => p.own),
        customdata: pts.map((p) => [p.lead, isNum(p.change) ? p.change : null]),
        hovertemplate: "%{y:,} (lead %{customdata[0]} d, change %{customdata[1]})<extra>%{fullData.name}</extra>",
      };
    });
    return { traces, scrapeDays: all.length, kept: kept.length };
  }

  async function renderListing(accountId, listingId, query, isCurrent) {
    const toParam = query.get("to");
    const to = toParam && DATE_RE.test(toParam) ? toParam : yesterday();
    const days = Math.min(Math.max(parseInt(query.get("days"), 10) || LISTING_DAYS, 7), 1096);
    const from = addDays(to, -(days - 1));
    const weekFrom = mondayOnOrAfter(from);
    const stayFrom = addDays(to, 1);
    const stayTo = addDays(stayFrom, FORWARD_DAYS - 1);
    const base = `/accounts/${enc(accountId)}`;
    const series = (metric, granularity, start) =>
      api(`${base}/insights`, { listing_id: listingId, metric, granularity, from: start, to });
    const [listings, viewsDay, viewsWeek, convDay, convWeek, forward] = await Promise.all([
      api(`${base}/listings`),
      series("p3_impressions", "day", from),
      series("p3_impressions", "week", weekFrom),
      series("conversion_rate", "day", from),
      series("conversion_rate", "week", weekFrom),
      api(`${base}/insights/forward`, { listing_id: listingId, stay_from: stayFrom, stay_to: stayTo }),
    ]);
    if (!isCurrent()) return;
    const listing = listings.items.find((l) => l.airbnb_listing_id === listingId) || {};
    const fwd = forwardTraces(forward);
    const windowNote = convWeek.points.some((p) => p.own_source === "airbnb_window")
      ? "Weeks with Airbnb's own figure for the week show it; others, the page-view-weighted mean."
      : "Page-view-weighted mean of the daily rates.";
    show(
      el("p", { class: "crumbs" }, el("a", { href: "#/portfolio" }, "Portfolio"), " / ", `account ${accountId}`),
      el("h2", { id: "listing-title", "data-listing-id": listingId, "data-account-id": accountId },
        listing.listing_name || listing.airbnb_internal_name || listingId),
      el(
        "p",
        { class: "summary", id: "listing-range", "data-from": from, "data-week-from": weekFrom, "data-to": to,
          "data-stay-from": stayFrom, "data-stay-to": stayTo },
        `${listing.airbnb_internal_name ? listing.airbnb_internal_name + " · " : ""}${listingId} · ` +
          `${from} to ${to}, own against similar listings. Last synced ${fmtTime(listing.last_synced_at)}.`,
      ),
      el(
        "div",
        { class: "charts" },
        chartBox("views-day", "Page views per day"),
        chartBox("views-week", "Page views per week", "Sum of the days (ISO weeks, Monday to Sunday)."),
        chartBox("conversion-day", "Conversion rate per day"),
        chartBox("conversion-week", "Conversion rate per week", windowNote),
        chartBox(
          "forward",
          `Forward demand: page views of the stay dates ${stayFrom} to ${stayTo}`,
          `One line per scrape day (the latest ${fwd.kept} of ${fwd.scrapeDays}): how views of each ` +
            "upcoming stay date built up from scrape to scrape.",
        ),
      ),
    );
    await Promise.all([
      plot("views-day", seriesTraces(viewsDay, "count"), ",d"),
      plot("views-week", seriesTraces(viewsWeek, "count"), ",d", { barmode: "group" }),
      plot("conversion-day", seriesTraces(convDay, "rate"), ".2%"),
      plot("conversion-week", seriesTraces(convWeek, "rate"), ".2%", { barmode: "group" }),
      plot("forward", fwd.traces, ",d", { showlegend: true }),
    ]);
  }

  // --- accounts ---------------------------------------------------------------------------

  const PAGE = 50;

  function credentialsBlock(a) {
    if (!a.needs_credentials) return el("span", { class: "ok" }, "credentials ok");
    return el(
      "div",
      { class: "needs-credentials", "data-needs-credentials": "true" },
      el("strong", {}, "Needs new credentials"),
      ` since ${fmtTime(a.credentials_invalid_at)}`,
      a.credentials_error ? el("small", {}, `Airbnb said: ${a.credentials_error}`) : null,
      el(
        "p",
        {},
        "Sign in to Airbnb as this host in a browser, copy the Cookie header of a request to " +
          "airbnb.com, and send it: ",
        el("code", {}, `PATCH ${API}/accounts/${a.account_id}`),
        " with ",
        el("code", {}, '{"airbnb_cookie": "<the Cookie header>"}'),
        ". Syncs resume by themselves once the cookie changed.",
      ),
    );
  }

  function jobRow(j) {
    const done = j.listings_succeeded + j.listings_failed;
    const total = j.listings_total;
    return el(
      "li",
      { class: `job job-${j.status}`, "data-job-id": j.job_id, "data-status": j.status },
      el("span", { class: "status" }, j.status),
      " ",
      `${j.kind} · scrape day ${j.scrape_day} · ${j.window_start} to ${j.window_end}`,
      el(
        "div",
        { class: "progress-row" },
        el("progress", { max: total || 1, value: total ? done : 0 }),
        ` ${done}/${total === null ? "?" : total} listings · ${fmtCount(j.rows_written)} rows`,
        j.duration_s !== null ? ` · ${j.duration_s.toFixed(1)} s` : "",
      ),
      j.error ? el("small", { class: "error" }, j.error) : null,
    );
  }

  async function renderAccounts(query, isCurrent) {
    const offset = Math.max(parseInt(query.get("offset"), 10) || 0, 0);
    const page = await api("/accounts", { limit: PAGE, offset });
    const jobs = await Promise.all(
      page.items.map((a) => api(`/accounts/${enc(a.account_id)}/syncs`, { limit: 3 })),
    );
    if (!isCurrent()) return;
    const running = jobs.some((j) => j.items.some((x) => !FINAL_JOBS.has(x.status)));
    const nav = el(
      "p",
      { class: "pager" },
      `${page.total} accounts`,
      offset > 0 ? [" · ", el("a", { href: `#/accounts?offset=${Math.max(offset - PAGE, 0)}` }, "previous")] : null,
      offset + PAGE < page.total ? [" · ", el("a", { href: `#/accounts?offset=${offset + PAGE}` }, "next")] : null,
      running ? " · jobs running, refreshing every 5 s" : null,
    );
    show(
      el("h2", {}, "Accounts"),
      nav,
      el(
        "div",
        { class: "accounts", id: "accounts" },
        page.items.map((a, i) =>
          el(
            "article",
            {
              class: a.needs_credentials ? "account attention" : "account",
              "data-account-id": a.account_id,
              "data-active": String(a.is_active),
            },
            el("h3", {}, `Account ${a.account_id}`, a.customer_id ? el("small", {}, ` customer ${a.customer_id}`) : null),
            el(
              "dl",
              {},
              el("dt", {}, "status"),
              el("dd", { "data-field": "status" }, a.is_active ? "active" : "inactive (never synced)"),
              el("dt", {}, "last sync"),
              el("dd", { "data-field": "last_sync_at" }, fmtTime(a.last_sync_at)),
              el("dt", {}, "credentials"),
              el("dd", {}, credentialsBlock(a), el("small", {}, ` version ${a.credentials_version}`)),
            ),
            el("h4", {}, "Recent jobs"),
            jobs[i].items.length
              ? el("ul", { class: "jobs" }, jobs[i].items.map(jobRow))
              : el("p", { class: "empty" }, "No job yet."),
          ),
        ),
      ),
    );
    if (running) {
      const hash = window.location.hash;
      setTimeout(() => {
        if (isCurrent() && window.location.hash === hash) route();
      }, JOB_REFRESH_MS);
    }
  }

  // --- routing ----------------------------------------------------------------------------

  let generation = 0;

  function parseHash() {
    const raw = window.location.hash.replace(/^#\/?/, "");
    const [path, search] = raw.split("?", 2);
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { page: parts[0] || "portfolio", parts: parts.slice(1), query: new URLSearchParams(search || "") };
  }

  async function route() {
    const token = ++generation;
    const isCurrent = () => token === generation;
    const { page, parts, query } = parseHash();
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.classList.toggle("current", a.dataset.nav === page || (page === "listing" && a.dataset.nav === "portfolio"));
    }
    if (!apiKey.get()) return askForKey(null);
    keyPanel.hidden = true;
    forgetKey.hidden = false;
    setState("loading");
    show(el("p", { class: "loading" }, "Loading\u2026"));
    try {
      if (page === "listing" && parts.length === 2) await renderListing(parts[0], parts[1], query, isCurrent);
      else if (page === "accounts") await renderAccounts(query, isCurrent);
      else await renderPortfolio(query, isCurrent);
      if (isCurrent()) setState("ready");
    } catch (err) {
      if (!isCurrent()) return;
      if (err instanceof KeyRefused) return askForKey(err);
      const body = err.body || {};
      show(
        el(
          "div",
          { class: "error", id: "page-error", role: "alert", "data-status": err.status || "" },
          el("strong", {}, err.status ? `The API answered ${err.status}` : "The page failed"),
          `: ${body.detail || body.error || err.message}`,
          err.status === 503 ? " (the database is not reachable; try again shortly)" : "",
        ),
      );
      setState("error");
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
