// Ferry's dashboard: a client of the api's own JSON routes. The API key is asked once per
// browser session, kept in sessionStorage and sent as `x-api-key`, never in a URL.
"use strict";

// Every error the page meets is kept here (the tests read it) as well as logged.
window.__ferryErrors = [];
// With capture, a script, style or image that failed to load is caught too.
window.addEventListener("error", (e) => window.__ferryErrors.push(e.message ? String(e.message) : `failed to load ${e.target.src || e.target.href}`), true);
window.addEventListener("unhandledrejection", (e) => window.__ferryErrors.push(String(e.reason)));

const KEY = "ferry-api-key";
const state = { filter: { status: "placed,processing" }, cursor: null, pages: [], confirm: null };

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class Unauthorized extends Error {}

// An api path relative to the page, so the dashboard works behind a proxy that serves the api
// under a prefix (https://ferry.example.org/bennys/).
function here(path) {
  return path.replace(/^\//, "");
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers["x-api-key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(here(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) throw new Unauthorized("the API key was refused");
  const answer = await resp.json();
  if (!answer.success) throw new Error(`${answer.error.code}: ${answer.error.detail}`);
  return answer;
}

function ago(secs) {
  if (secs === null || secs === undefined) return "–";
  if (secs < 90) return `${secs} s`;
  if (secs < 5400) return `${Math.round(secs / 60)} min`;
  return `${(secs / 3600).toFixed(1)} h`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// ---- login ----

function showLogin(problem) {
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", id: "api-key", autocomplete: "current-password", required: true });
  const main = document.getElementById("main");
  main.replaceChildren(
    h("section", { class: "login" },
      h("h2", {}, "Sign in to this tenant's dashboard"),
      problem ? h("p", { class: "notice failure", id: "login-problem" }, problem) : null,
      h("form", {
        id: "login",
        onsubmit: async (e) => {
          e.preventDefault();
          sessionStorage.setItem(KEY, input.value);
          try {
            if (await signedIn()) route();
            else {
              sessionStorage.removeItem(KEY);
              showLogin("That key was refused.");
            }
          } catch (err) {
            sessionStorage.removeItem(KEY);
            showLogin(String(err));
          }
        },
      },
        h("label", {}, "API key", input),
        h("button", { class: "primary", type: "submit" }, "Sign in"),
        h("p", { class: "muted" }, "The key is kept for this browser tab only and sent in a header, never in a link."))));
  input.focus();
}

// Whether the page may read: no key needed, or the one kept is right. Asked of /ui/session,
// which answers 200 either way, so a wrong key is not a refused request.
async function signedIn() {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers["x-api-key"] = key;
  const s = (await (await fetch(here("/ui/session"), { headers })).json()).data;
  return !s.key_required || s.key_valid;
}

// ---- the overview ----

let timer = null;

function live(fn) {
  clearInterval(timer);
  timer = setInterval(() => fn().catch(report), 2000);
}

function report(err) {
  if (err instanceof Unauthorized) {
    sessionStorage.removeItem(KEY);
    clearInterval(timer);
    showLogin("Your key was refused; sign in again.");
    return;
  }
  document.getElementById("connection").textContent = `(${err.message})`;
}

async function header() {
  const alive = (await api("GET", "/alive")).data;
  document.getElementById("tenant").textContent = alive.tenant;
  document.getElementById("connection").textContent = alive.store_ok ? "" : `(${alive.store_problem})`;
  document.getElementById("logout").hidden = !sessionStorage.getItem(KEY);
  return alive;
}

function chart(minutes) {
  const max = Math.max(1, ...minutes.map((m) => m.created + m.failed + m.retried));
  const w = 600 / minutes.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 90");
  svg.setAttribute("preserveAspectRatio", "none");
  minutes.forEach((m, i) => {
    let y = 90;
    for (const [n, color] of [[m.created, "#1a7f37"], [m.retried, "#bf8700"], [m.failed, "#cf222e"]]) {
      const bar = document.createElementNS(ns, "rect");
      const height = (n / max) * 86;
      y -= height;
      bar.setAttribute("x", i * w + 1);
      bar.setAttribute("width", Math.max(1, w - 2));
      bar.setAttribute("y", y);
      bar.setAttribute("height", height);
      bar.setAttribute("fill", color);
      svg.append(bar);
    }
  });
  return svg;
}

function overviewSection(alive, stats) {
  const c = stats.counts;
  const hour = stats.minutes.reduce((a, m) => ({ created: a.created + m.created, failed: a.failed + m.failed, retried: a.retried + m.retried }), { created: 0, failed: 0, retried: 0 });
  const done = hour.created + hour.failed + hour.retried;
  const rate = done ? `${((100 * hour.failed) / done).toFixed(1)} %` : "–";
  const w = alive.worker;
  const switchWorker = (to) => async () => {
    await api("PUT", to === "run" ? "/start_worker" : "/stop_worker");
    await refresh();
  };
  return h("section", { id: "overview" },
    h("h2", {}, "Tenant"),
    h("div", { class: "row" },
      h("span", {}, "Target: ", h("b", { id: "target-kind" }, stats.target || "none")),
      h("span", {}, "Source: ", h("b", {}, stats.source || "none")),
      h("span", {}, "Worker: ", h("b", { id: "worker-state" }, `${w.desired}, ${w.connected ? "connected" : "not connected"}`)),
      w.desired === "running"
        ? h("button", { id: "stop-worker", onclick: switchWorker("stop") }, "Stop worker")
        : h("button", { id: "start-worker", class: "primary", onclick: switchWorker("run") }, "Start worker"),
      alive.oauth && alive.oauth.needs_consent
        ? h("a", { href: here(alive.oauth.consent_url), class: "notice failure" }, `Consent needed: ${alive.oauth.reason}`)
        : null),
    h("div", { class: "tiles spaced" },
      ["placed", "processing", "created", "error", "cleared"].map((s) =>
        h("div", { class: `tile ${s}`, id: `count-${s}` }, h("b", {}, c[s]), s)),
      Object.entries(stats.kinds).filter(([, n]) => n > 0).map(([k, n]) => h("div", { class: "tile" }, h("b", {}, n), `${k} jobs`)),
      h("div", { class: "tile" }, h("b", {}, ago(alive.oldest_waiting_s)), "oldest waiting"),
      h("div", { class: "tile" }, h("b", {}, rate), "errors, last hour")),
    h("div", { class: "muted spaced" },
      `Last hour, per minute: ${hour.created} created, ${hour.retried} to try again, ${hour.failed} failed`),
    chart(stats.minutes));
}

function filterForm() {
  const f = state.filter;
  const field = (name, attrs) => h("input", { name, value: f[name] || "", ...attrs });
  const status = h("select", { name: "status" },
    [["placed,processing", "waiting and in flight"], ["error", "error"], ["created", "created"], ["cleared", "cleared"],
      ["placed,processing,created,error,cleared", "every job"]].map(([v, label]) =>
      h("option", { value: v, selected: f.status === v }, label)));
  const kind = h("select", { name: "kind" },
    [["", "any kind"], ["order_line", "order lines"], ["booking", "bookings"], ["records", "records"]].map(([v, label]) =>
      h("option", { value: v, selected: (f.kind || "") === v }, label)));
  return h("form", {
    id: "filters", class: "row",
    onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData(e.target);
      state.filter = Object.fromEntries([...data.entries()].filter(([, v]) => v !== ""));
      for (const t of ["since", "until"]) if (state.filter[t]) state.filter[t] = new Date(state.filter[t]).toISOString();
      state.cursor = null;
      state.confirm = null;
      refresh();
    },
  },
    h("label", {}, "Search", field("q", { id: "search", placeholder: "uniqueid, bookId, worksheet, reason…", size: 30 })),
    h("label", {}, "Status", status),
    h("label", {}, "Kind", kind),
    h("label", {}, "Reason code", field("reason", { placeholder: "ERP_WORKSHEET_NOT_FOUND" })),
    h("label", {}, "Made since", h("input", { type: "datetime-local", name: "since" })),
    h("label", {}, "Made until", h("input", { type: "datetime-local", name: "until" })),
    h("button", { class: "primary", type: "submit", id: "apply" }, "Search"));
}

function jobRow(j) {
  return h("tr", { "data-id": j.id },
    h("td", { class: "mono" }, h("a", { href: `#/jobs/${j.id}` }, j.uniqueid || j.bookId || j.key || j.id)),
    h("td", {}, j.kind),
    h("td", { class: `status ${j.status}` }, j.status),
    h("td", {}, j.attempts),
    h("td", {}, j.reason_code ? h("span", { class: "mono" }, j.reason_code) : "", j.reason_text ? h("div", { class: "muted" }, j.reason_text) : null),
    h("td", {}, when(j.updated_at)));
}

async function bulkRetry() {
  const body = { ...state.filter, dry_run: true };
  delete body.status;
  const n = (await api("POST", "/jobs/retry", body)).data.matched;
  state.confirm = {
    text: `Retry ${n} failed job${n === 1 ? "" : "s"} matching this filter?`,
    go: async () => { const r = await api("POST", "/jobs/retry", { ...body, dry_run: false }); return `${r.data.retried} job(s) retried.`; },
  };
  refresh();
}

async function clearWaiting(placed) {
  state.confirm = {
    text: `Clear ${placed} waiting job${placed === 1 ? "" : "s"}? They move to cleared and are not delivered.`,
    go: async () => { const r = await api("PUT", "/clear_queue"); return r.message; },
  };
  refresh();
}

function confirmBox() {
  const c = state.confirm;
  if (!c) return null;
  if (c.done) return h("div", { class: "notice", id: "action-done" }, c.done);
  return h("div", { class: "confirm", id: "confirm" },
    h("p", { id: "confirm-text" }, c.text),
    h("button", { class: "danger", id: "confirm-yes", onclick: async () => { c.done = await c.go(); refresh(); } }, "Yes, do it"),
    " ",
    h("button", { id: "confirm-no", onclick: () => { state.confirm = null; refresh(); } }, "Cancel"));
}

// A search reads at most a few thousand jobs per answer; pages that found nothing are followed
// at once, a few at a time, so a rare job is found without a person clicking through.
async function jobsPage() {
  const params = new URLSearchParams({ ...state.filter, limit: "50" });
  if (state.cursor) params.set("cursor", state.cursor);
  let page = (await api("GET", `/queue?${params}`)).data;
  let jobs = page.jobs;
  for (let follow = 0; jobs.length === 0 && page.next_cursor && follow < 20; follow++) {
    params.set("cursor", page.next_cursor);
    page = (await api("GET", `/queue?${params}`)).data;
    jobs = page.jobs;
  }
  return { ...page, jobs };
}

async function jobsBody(counts) {
  const page = await jobsPage();
  const actions = [];
  if (state.filter.status === "error") {
    actions.push(h("button", { id: "retry-matching", onclick: () => bulkRetry().catch(report) }, "Retry every failed job matching"));
  }
  actions.push(h("button", { id: "clear-waiting", onclick: () => clearWaiting(counts.placed) }, `Clear waiting jobs (${counts.placed})`));
  return h("div", { id: "jobs-body" },
    h("div", { class: "row spaced" }, actions),
    confirmBox(),
    page.exact ? h("div", { class: "notice", id: "exact" }, "Exact match: ", h("a", { href: `#/jobs/${page.exact.id}` }, page.exact.uniqueid || page.exact.bookId || page.exact.key), ` (${page.exact.status})`) : null,
    h("p", { class: "muted", id: "jobs-count" }, `${page.length} job(s) in these statuses; ${page.jobs.length} shown${page.next_cursor ? " (more on the next page)" : ""}.`),
    h("table", { id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Job", "Kind", "Status", "Attempts", "Reason", "Updated"].map((t) => h("th", {}, t)))),
      h("tbody", {}, page.jobs.map(jobRow))),
    h("div", { class: "row spaced" },
      state.cursor ? h("button", { onclick: () => { state.cursor = state.pages.pop() || null; refresh(); } }, "First page") : null,
      page.next_cursor ? h("button", { id: "next-page", onclick: () => { state.pages.push(state.cursor); state.cursor = page.next_cursor; refresh(); } }, "Next page") : null));
}

async function overview() {
  const [alive, stats] = await Promise.all([header(), api("GET", "/stats").then((a) => a.data)]);
  const body = await jobsBody(stats.counts);
  const over = overviewSection(alive, stats);
  const main = document.getElementById("main");
  const [oldOver, oldBody] = [main.querySelector("#overview"), main.querySelector("#jobs-body")];
  if (!oldOver || !oldBody) {
    // The filters are drawn once: a live refresh never takes what a person is typing.
    main.replaceChildren(over, h("section", { id: "jobs" }, h("h2", {}, "Jobs"), filterForm(), body));
    return;
  }
  oldOver.replaceWith(over);
  oldBody.replaceWith(body);
}

// ---- one job ----

async function artifact(jobId, name) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers["x-api-key"] = key;
  const resp = await fetch(here(`/jobs/${jobId}/artifacts/${name}`), { headers });
  const url = URL.createObjectURL(await resp.blob());
  return name.endsWith(".png")
    ? h("img", { class: "artifact", src: url, alt: name })
    : h("a", { href: url, target: "_blank", rel: "noopener" }, name);
}

async function jobPage(id) {
  clearInterval(timer);
  await header();
  const [job, log] = await Promise.all([api("GET", `/jobs/${id}`), api("GET", `/jobs/${id}/log`)]);
  const j = job.data;
  const events = log.data.events;
  const rows = [];
  for (const e of events) {
    const shots = await Promise.all((e.artifacts || []).map((a) => artifact(id, a)));
    rows.push(h("tr", {},
      h("td", {}, when(e.at)),
      h("td", { class: `status ${e.to}` }, `${e.from ? `${e.from} → ` : ""}${e.to}`),
      h("td", {}, e.attempt),
      h("td", {}, e.http_status || ""),
      h("td", {}, e.duration_ms !== undefined ? `${e.duration_ms} ms` : ""),
      h("td", {}, e.message, e.excerpt ? h("div", { class: "mono muted" }, e.excerpt) : null, shots)));
  }
  const fields = Object.entries(j).filter(([k]) => !["id", "status"].includes(k));
  document.getElementById("main").replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all jobs")),
    h("section", { id: "job" },
      h("h2", {}, "Job ", h("span", { class: "mono" }, j.id), " ", h("span", { class: `status ${j.status}`, id: "job-status" }, j.status)),
      j.status === "error" ? h("button", { id: "retry-one", class: "primary", onclick: async () => { await api("PUT", `/jobs/${id}/retry`); jobPage(id); } }, "Retry this job") : null,
      h("table", {}, h("tbody", {}, fields.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))))))),
    h("section", { id: "timeline" },
      h("h2", {}, `What happened (${events.length} event${events.length === 1 ? "" : "s"})`),
      h("table", {},
        h("thead", {}, h("tr", {}, ["When", "Status", "Attempt", "HTTP", "Took", "What"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))));
  timer = setInterval(() => { if (location.hash === `#/jobs/${id}`) jobPage(id).catch(report); }, 3000);
}

// ---- routing ----

async function refresh() {
  try {
    await overview();
  } catch (err) {
    report(err);
  }
}

async function route() {
  const m = location.hash.match(/^#\/jobs\/([0-9a-f-]{36})$/);
  try {
    if (!(await signedIn())) {
      const had = sessionStorage.getItem(KEY);
      sessionStorage.removeItem(KEY);
      showLogin(had ? "That key was refused." : null);
      return;
    }
    if (m) await jobPage(m[1]);
    else {
      document.getElementById("main").replaceChildren();
      await overview();
      live(overview);
    }
  } catch (err) {
    if (err instanceof Unauthorized) showLogin(sessionStorage.getItem(KEY) ? "That key was refused." : null);
    else report(err);
  }
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  showLogin(null);
});
window.addEventListener("hashchange", route);
route();
