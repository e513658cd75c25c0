// The Aether dashboard: one page, six views chosen by the URL's hash. Every value from the
// server goes into the page as text (textContent), never as HTML.
"use strict";

// Errors are kept where a test (or a curious operator) can read them.
window.aetherErrors = [];
window.addEventListener("error", (e) => {
  window.aetherErrors.push(String(e.message || (e.target && e.target.src) || e));
}, true);
window.addEventListener("securitypolicyviolation", (e) => {
  window.aetherErrors.push("blocked by the content security policy: " + e.violatedDirective);
});
const consoleError = console.error.bind(console);
console.error = (...args) => {
  window.aetherErrors.push(args.map(String).join(" "));
  consoleError(...args);
};
window.addEventListener("unhandledrejection", (e) => {
  window.aetherErrors.push("unhandled rejection: " + String(e.reason));
});

const main = () => document.getElementById("main");
// Each page shown gets a new generation: a refresh chain or a tail of an earlier page stops.
let generation = 0;
let timer = null;
let source = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    // Through the CSS object model: the page's policy refuses inline style attributes.
    else if (k === "bg") node.style.background = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// `body` is the rows, or a tbody the caller keeps filling (the live tail): either way the
// rows sit in the table's only body, under its headers.
function table(headers, body, attrs) {
  const tbody = body instanceof HTMLTableSectionElement ? body : el("tbody", {}, body);
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    tbody);
}

async function api(path) {
  const mine = generation;
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  // An answer for a page left since: the view that asked never goes on (nor draws over the
  // page shown now).
  if (mine !== generation) return new Promise(() => {});
  if (!response.ok) {
    throw new Error((body && body.error) || ("HTTP " + response.status));
  }
  return body;
}

function show(...nodes) {
  main().replaceChildren(...nodes);
}

function failure(title, err) {
  return [el("h2", {}, title), el("p", { class: "error", role: "alert" }, err.message)];
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "value" }, value));
}

// Colours told apart with colour blindness (Okabe and Ito), then hues spread by a hash.
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#8a7a00", "#000000"];
function colourer(names) {
  const index = new Map([...names].sort().map((n, i) => [n, i]));
  return (name) => {
    const i = index.get(name);
    if (i !== undefined && i < PALETTE.length) return PALETTE[i];
    let h = 0;
    for (const c of name) h = (h * 131 + c.charCodeAt(0)) >>> 0;
    return "hsl(" + (h % 360) + " 55% 40%)";
  };
}

// Refreshes a page `ms` after the previous answer came, never while one is awaited: a slow
// server gets one request at a time from each page, not a growing queue of them.
function every(ms, f) {
  const mine = generation;
  const step = async () => {
    try { await f(); } catch (err) { window.aetherErrors.push(String(err)); }
    if (mine === generation) timer = setTimeout(step, ms);
  };
  step();
}

async function clusterView() {
  try {
    const c = await api("api/cluster");
    const rows = c.members.map((m) => el("tr", { "data-node": m.node },
      el("td", {}, m.node),
      el("td", { class: m.alive ? "alive" : "silent" }, m.alive ? "alive" : "silent"),
      el("td", {}, m.leader ? "leader" : ""),
      el("td", {}, m.shards),
      el("td", {}, m.lastHeartbeatMs === null ? "never heard" : (m.lastHeartbeatMs / 1000).toFixed(1) + " s ago"),
      el("td", { class: "data" }, m.incarnation || "")));
    const owners = [...new Set(c.shards.filter((o) => o))].sort();
    // Colours by every member known, so that a node keeps its colour when another dies.
    const colour = colourer(new Set([...c.members.map((m) => m.node), ...owners]));
    const map = el("div", { id: "shard-map", role: "list", "aria-label": "Shards by owner" },
      c.shards.map((owner, i) => el("div", {
        class: "shard", role: "listitem", "data-owner": owner || "",
        title: "shard " + i + ": " + (owner || "unassigned"),
        bg: owner ? colour(owner) : "#888",
      }, i)));
    show(
      el("h2", {}, "Cluster " + c.name),
      el("div", { class: "cards" },
        card("leader", c.leader || "none"),
        card("term", c.term === null ? "-" : c.term),
        card("assignment epoch", c.epoch === null ? "-" : c.epoch),
        card("members alive", c.members.filter((m) => m.alive).length)),
      table(["Node", "Status", "Role", "Shards", "Last heartbeat", "Incarnation"], rows, { id: "members" }),
      el("h2", {}, "Shard map"),
      el("div", { class: "legend", id: "owners" }, owners.map((o) =>
        el("span", { "data-owner": o }, el("span", { class: "swatch", bg: colour(o) }), o))),
      c.shards.length ? map : el("p", { class: "muted" }, "No assignment table yet."));
  } catch (err) {
    show(...failure("Cluster", err));
  }
}

function chart(samples) {
  const w = 600, h = 160, pad = 24;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].atMs - samples[i - 1].atMs) / 1000;
    if (dt > 0) rates.push({ t: samples[i].atMs, r: Math.max(0, samples[i].lastSeq - samples[i - 1].lastSeq) / dt });
  }
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...rates.map((p) => p.r));
  svg.setAttribute("aria-label", "Messages per second over the last minutes, at most " + max.toFixed(1));
  if (rates.length > 1) {
    const t0 = rates[0].t, t1 = rates[rates.length - 1].t;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", rates.map((p) =>
      (pad + (w - 2 * pad) * (p.t - t0) / Math.max(1, t1 - t0)).toFixed(1) + "," +
      (h - pad - (h - 2 * pad) * p.r / max).toFixed(1)).join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", pad);
  label.setAttribute("y", 14);
  label.textContent = "max " + max.toFixed(1) + " msg/s";
  svg.append(label);
  return svg;
}

async function streamView() {
  try {
    const s = await api("api/stream");
    const last = s.samples.length > 1 ? s.samples.slice(-2) : null;
    const rate = last ? Math.max(0, last[1].lastSeq - last[0].lastSeq) / Math.max(0.001, (last[1].atMs - last[0].atMs) / 1000) : 0;
    // A partitioned store: its figures are the partitions' added up, each partition listed.
    const partitioned = s.partitions > 1;
    const parts = partitioned
      ? [el("h2", {}, "Partitions"),
        el("p", { class: "muted" }, "Events are ordered within a partition, not across partitions."),
        table(["Partition", "Stream", "Messages", "Subjects", "Bytes", "First sequence", "Last sequence"],
          s.partitionStreams.map((p) => el("tr", { "data-partition": p.partition },
            el("td", {}, p.partition), el("td", {}, p.name), el("td", {}, p.messages),
            el("td", {}, p.subjects), el("td", {}, bytes(p.bytes)), el("td", {}, p.firstSeq),
            el("td", {}, p.lastSeq))), { id: "stream-partitions" })]
      : [];
    show(
      el("h2", {}, "Stream " + s.name + (partitioned ? " (" + s.partitions + " partitions)" : "")),
      el("div", { class: "cards", id: "stream-cards" },
        card("partitions", s.partitions),
        card("messages (a batch is one)", s.messages),
        card("subjects (actors, snapshots)", s.subjects),
        card("bytes", bytes(s.bytes)),
        card("rate now", rate.toFixed(1) + " msg/s"),
        card("retention", s.retention),
        card("max age", s.maxAgeSecs ? s.maxAgeSecs + " s" : "unlimited"),
        card("replicas", s.replicas),
        card("storage", s.storage)),
      ...parts,
      el("h2", {}, "Messages per second"),
      chart(s.samples));
  } catch (err) {
    show(...failure("Stream", err));
  }
}

// The page of an actor: its id and, for a typed actor, its type. Every part is
// percent-encoded, so an id or a type cannot end the hash's path or add to its query.
function actorHref(actorType, actorId, from) {
  const query = new URLSearchParams();
  if (actorType) query.set("type", actorType);
  if (from) query.set("from", String(from));
  const q = query.toString();
  return "#actor/" + encodeURIComponent(actorId) + (q ? "?" + q : "");
}

// An actor as people read it: type/id, or the id alone for an untyped actor.
function actorName(actorType, actorId) {
  return actorType ? actorType + "/" + actorId : actorId;
}

function tailView() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const list = el("tbody", { id: "tail-list", "aria-live": "polite" });
  const status = el("p", { class: "muted", id: "tail-status" }, "Not started.");
  const chosen = params.get("source") === "store" ? "store" : "bus";
  const sourceSelect = el("select", { name: "source" },
    el("option", { value: "bus", selected: chosen === "bus" ? "selected" : null }, "bus (published events)"),
    el("option", { value: "store", selected: chosen === "store" ? "selected" : null }, "store (every saved event)"));
  const form = el("form", { id: "tail-form" },
    el("label", {}, "Source", sourceSelect),
    el("label", {}, "Namespace pattern (bus)", el("input", { name: "pattern", value: params.get("pattern") || ">" })),
    el("label", {}, "Event types (comma-separated)", el("input", { name: "type", value: params.get("type") || "" })),
    el("label", {}, "Actor type", el("input", { name: "actorType", value: params.get("actorType") || "" })),
    el("label", {}, "Actor pattern", el("input", { name: "actor", value: params.get("actor") || "" })),
    el("button", { type: "submit" }, "Follow"));
  const start = () => {
    if (source) source.close();
    list.replaceChildren();
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const k of ["source", "pattern", "type", "actorType", "actor"]) if (data.get(k)) query.set(k, data.get(k));
    let following = "Following the " + (data.get("source") === "store" ? "store" : "bus");
    let dropped = 0;
    let skipped = 0;
    let buffer = "";
    const warn = () => {
      const parts = [];
      if (dropped) parts.push(dropped + " events dropped so far because this page did not keep up (the dashboard holds " +
        (buffer || "a few hundred") + " for it)");
      if (skipped) parts.push(skipped + " messages on the store's subjects skipped: not events the store wrote");
      status.textContent = following + ": " + parts.join("; ") + ".";
      status.className = "warning";
    };
    status.textContent = "Connecting…";
    status.className = "muted";
    source = new EventSource("api/tail?" + query.toString());
    source.addEventListener("source", (m) => {
      let v = {};
      try { v = JSON.parse(m.data); } catch (_) { v = {}; }
      following = v.source === "store"
        ? "Following the store: stream " + v.what + " (" + v.subject + ")"
        : "Following the bus: " + v.what + " (" + v.subject + ")";
      status.dataset.source = v.source === "store" ? "store" : "bus";
    });
    source.addEventListener("ready", (m) => {
      buffer = m.data;
      status.textContent = following;
      status.className = "muted";
    });
    source.addEventListener("event", (m) => {
      const e = JSON.parse(m.data);
      list.prepend(el("tr", { class: "tail-row", "data-actor": e.actorId, "data-actor-type": e.actorType || "", "data-type": e.eventType },
        el("td", {}, e.timestamp),
        el("td", {}, el("a", { href: actorHref(e.actorType, e.actorId) }, actorName(e.actorType, e.actorId))),
        el("td", {}, e.version),
        el("td", {}, e.eventType), el("td", { class: "data" }, JSON.stringify(e.data))));
      while (list.children.length > 500) list.lastChild.remove();
    });
    source.addEventListener("lagged", (m) => {
      dropped += Number(m.data) || 0;
      status.dataset.dropped = String(dropped);
      warn();
    });
    source.addEventListener("malformed", (m) => {
      skipped += Number(m.data) || 0;
      status.dataset.malformed = String(skipped);
      warn();
    });
    source.onerror = () => {
      // A refused tail (too many open, or no access) is not retried by the browser.
      if (source.readyState === EventSource.CLOSED) {
        status.textContent = "The dashboard refused the live tail (too many open, no access, or no such stream): press Follow to retry.";
      } else {
        status.textContent = "Connection lost; reconnecting…";
      }
      status.className = "warning";
    };
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); start(); });
  show(el("h2", {}, "Live tail"), form, status,
    table(["Time", "Actor", "Version", "Type", "Data"], list, { id: "tail" }));
  start();
}

async function actorView() {
  const [path, query] = location.hash.slice(1).split("?");
  const id = decodeURIComponent(path.split("/")[1] || "");
  const params = new URLSearchParams(query || "");
  const from = Number(params.get("from")) || 1;
  const actorType = params.get("type") || "";
  const input = el("input", { name: "actor", value: id, required: "required" });
  const typeInput = el("input", { name: "type", value: actorType, placeholder: "untyped" });
  const form = el("form", { id: "actor-form" }, el("label", {}, "Actor type", typeInput),
    el("label", {}, "Actor id", input), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = actorHref(typeInput.value.trim(), input.value.trim());
  });
  if (!id) {
    show(el("h2", {}, "Actor"), form);
    return;
  }
  const name = actorName(actorType, id);
  try {
    const q = new URLSearchParams();
    q.set("from", String(from));
    if (actorType) q.set("type", actorType);
    const a = await api("api/actors/" + encodeURIComponent(id) + "?" + q.toString());
    const rows = a.events.map((e) => el("tr", { class: "actor-event" },
      el("td", {}, e.version), el("td", {}, e.eventType), el("td", {}, e.timestamp),
      el("td", { class: "data" }, JSON.stringify(e.data)),
      el("td", { class: "data" }, JSON.stringify(e.metadata || {}))));
    const shown = a.events.length
      ? "Versions " + a.events[0].version + " to " + a.events[a.events.length - 1].version
      : "No events from version " + a.from;
    const pages = el("nav", { class: "pages", id: "actor-pages", "aria-label": "Pages of the history" },
      a.from > 1 ? el("a", { href: actorHref(a.actorType, a.actorId), id: "first-page" }, "First page") : null,
      a.next !== null ? el("a", { href: actorHref(a.actorType, a.actorId, a.next), id: "next-page" }, "Next page") : null);
    show(el("h2", {}, "Actor " + actorName(a.actorType, a.actorId)), form,
      el("p", { class: "muted", id: "actor-type", "data-actor-type": a.actorType || "" },
        a.actorType ? "Actor type " + a.actorType : "Untyped actor (no actor type)"),
      el("p", { class: "muted", id: "actor-summary" }, shown + " of " + a.latestVersion +
        " in stream " + a.stream + (a.partitions > 1 ? " (partition " + a.partition + " of " + a.partitions + ")" : "") +
        " (" + a.limit + " per page)"),
      a.retired !== null && a.retired !== undefined
        ? el("p", { class: "retired", id: "actor-retired" }, "Retired at version " + a.retired + ": it takes no more commands")
        : null,
      pages,
      table(["Version", "Type", "Time", "Data", "Metadata"], rows, { id: "actor-events" }));
  } catch (err) {
    show(...failure("Actor " + name, err), form);
  }
}

async function projectionsView() {
  try {
    const p = await api("api/projections");
    const keptBy = (x) => x.keptBy === "sink"
      ? "sink (reported " + (x.reportedSecsAgo ?? 0).toFixed(1) + "s ago" + (x.stale ? "; stale: not running?" : "") + ")"
      : "checkpoint";
    const rows = p.projections.map((x) => el("tr", { "data-projection": x.name },
      el("td", {}, x.name),
      el("td", {}, x.position ? x.position.sequence + "." + x.position.index : "-"),
      el("td", {}, x.lag === null ? "-" : x.lag), el("td", {}, x.parked), el("td", {}, keptBy(x))));
    // On a partitioned log each checkpoint <name>.l<k> lags behind partition k's head.
    const heads = p.logPartitions > 1
      ? "log partition heads " + p.heads.map((h, k) => "l" + k + " " + (h ? h.sequence : "-")).join(", ")
      : "stream head " + (p.head ? p.head.sequence : "-");
    show(el("h2", {}, "Projections"),
      el("p", { class: "muted", id: "projection-heads" }, "Bucket " + p.bucket + ", " + heads),
      rows.length ? table(["Projection", "Position", "Lag", "Parked", "Position kept by"], rows, { id: "projections" })
        : el("p", { class: "muted" }, "No projection has reported to this bucket yet."));
  } catch (err) {
    show(...failure("Projections", err));
  }
}

// How long until a timer is due, or how late it is: "in 4.2 s", "late 3 min".
function dueIn(secs) {
  const a = Math.abs(secs);
  const span = a < 60 ? a.toFixed(1) + " s"
    : a < 3600 ? Math.floor(a / 60) + " min " + Math.floor(a % 60) + " s"
    : a < 172800 ? Math.floor(a / 3600) + " h " + Math.floor((a % 3600) / 60) + " min"
    : Math.floor(a / 86400) + " d " + Math.floor((a % 86400) / 3600) + " h";
  return secs >= 0 ? "in " + span : "late " + span;
}

// The timers page: its filter form is drawn once, the figures below it refreshed (so what is
// being typed in the form is never redrawn away). Every value from the stream goes in as text.
function timersView() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const actorType = el("input", { name: "actorType", value: params.get("actorType") || "", placeholder: "every type" });
  const actor = el("input", { name: "actor", value: params.get("actor") || "", placeholder: "every actor" });
  const limit = el("input", { name: "limit", type: "number", min: "0", max: "200", value: params.get("limit") || "50" });
  const form = el("form", { id: "timers-form" },
    el("label", {}, "Actor type", actorType), el("label", {}, "Actor id", actor),
    el("label", {}, "Timers listed", limit), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (actorType.value.trim()) q.set("actorType", actorType.value.trim());
    if (actor.value) q.set("actor", actor.value);
    if (limit.value) q.set("limit", limit.value);
    location.hash = "#timers" + (q.toString() ? "?" + q.toString() : "");
  });
  const body = el("div", { id: "timers-body" }, el("p", { class: "muted" }, "Loading…"));
  show(el("h2", {}, "Timers"), form, body);
  const query = new URLSearchParams();
  for (const k of ["actorType", "actor", "limit"]) if (params.get(k)) query.set(k, params.get(k));
  every(1000, async () => {
    try {
      const t = await api("api/timers" + (query.toString() ? "?" + query.toString() : ""));
      const r = t.reactor;
      const reactor = [el("h2", {}, "Reactor " + r.name)];
      if (r.missing) {
        reactor.push(el("p", { class: "muted", id: "reactor-missing" }, r.missing));
      } else {
        reactor.push(table(["Partition", "Position", "Lag", "Parked"], r.partitions.map((p) =>
          el("tr", { "data-partition": p.name },
            el("td", {}, p.name),
            el("td", {}, p.position ? p.position.sequence + "." + p.position.index : "-"),
            el("td", {}, p.lag === null ? "-" : p.lag),
            el("td", {}, p.parked))), { id: "reactor-partitions" }));
      }
      const rows = t.next.map((x) => el("tr", { class: "timer", "data-actor": x.actorId, "data-actor-type": x.actorType },
        el("td", {}, isNaN(Date.parse(x.due)) ? x.due : new Date(x.due).toISOString()),
        el("td", {}, el("a", { href: actorHref(x.actorType, x.actorId) }, actorName(x.actorType, x.actorId))),
        el("td", {}, x.name),
        el("td", { class: x.dueInSecs < 0 ? "warning" : "" }, dueIn(x.dueInSecs))));
      const timers = t.missing
        ? [el("p", { class: "warning", id: "timers-missing" }, t.missing)]
        : [el("div", { class: "cards", id: "timers-cards" },
            card("pending", t.total),
            card("fired, awaiting delivery", t.firedAwaitingDelivery),
            card("unreadable messages", t.unreadable),
            card("reactor lag (max)", r.maxLag === null ? "-" : r.maxLag),
            card("reactor parked", r.parked)),
          el("p", { class: "muted" }, "Stream " + t.stream + ": " + (t.next.length < t.total
            ? "the " + t.next.length + " due first of " + t.total + " pending." : t.total + " pending.")),
          rows.length ? table(["Due", "Actor", "Timer", "When"], rows, { id: "timers" })
            : el("p", { class: "muted" }, "No pending timers.")];
      body.replaceChildren(...timers, ...reactor);
    } catch (err) {
      body.replaceChildren(el("p", { class: "error", role: "alert" }, err.message));
    }
  });
}

const views = { cluster: clusterView, stream: streamView, tail: tailView, actor: actorView, projections: projectionsView, timers: timersView };
const refreshed = new Set(["cluster", "stream", "projections"]);

function route() {
  generation++;
  if (timer) { clearTimeout(timer); timer = null; }
  if (source) { source.close(); source = null; }
  const page = (location.hash.slice(1).split(/[/?]/)[0]) || "cluster";
  const view = views[page] || clusterView;
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (refreshed.has(page)) every(1000, view); else view();
}

window.addEventListener("hashchange", route);
route();
