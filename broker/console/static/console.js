// The broker's web console: a WAMP client of the meta API (Autobahn|JS, vendored).
// It logs in to the configured admin realm with a ticket, refuses any other role, then
// reads the wamp.* meta procedures and the router-specific wamp.broker.* ones.
// Every value from the router reaches the page as text (textContent), never as HTML.
"use strict";

const state = {
  session: null, config: null, nodes: {}, series: [], lastTotals: {},
  pages: { sessions: 0, subscriptions: 0, registrations: 0 }, watch: null, events: 0,
};
window.consoleState = state;
const PAGE = 50;
const HISTORY = 300;
const $ = (id) => document.getElementById(id);
const SERIES = [
  ["in", "messages in", "#2d6cdf"], ["out", "messages out", "#18794e"],
  ["events", "events delivered", "#c27c0e"], ["calls", "calls", "#7c3aed"],
  ["errors", "errors", "#b3261e"],
];

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else tr.appendChild(el("td", c));
  }
  return tr;
}
function fill(id, rows) { $(id).replaceChildren(...rows); }
function perNode(nodes) {
  return Object.entries(nodes || {}).map(([n, c]) => `${n}: ${c}`).join(", ");
}
function duration(seconds) {
  const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (h || d ? h + "h " : "") + m + "m " + (s % 60) + "s";
}
function when(epoch) { return epoch ? new Date(epoch * 1000).toLocaleString() : "?"; }
function errorText(err) {
  if (err && err.error) return err.error + (err.args && err.args.length ? ": " + err.args[0] : "");
  return String(err);
}
function json(id, fallback) {
  const text = $(id).value.trim();
  return text ? JSON.parse(text) : fallback;
}

// --- login ------------------------------------------------------------------------------
async function start() {
  const config = await (await fetch("config.json", { cache: "no-store" })).json();
  state.config = config;
  $("login-realm").textContent = config.realm;
  $("login-role").textContent = config.role;
  for (const span of document.querySelectorAll(".realm-name")) span.textContent = config.realm;
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login(); });
  $("authmethod").addEventListener("change", () => {
    $("secret-label").textContent =
      $("authmethod").value === "ticket" ? "Ticket" : "Private key seed (64 hex digits)";
  });
  $("logout").addEventListener("click", () => state.connection && state.connection.close());
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => show(button.dataset.page));
  }
  wirePages();
}

// How to answer the router's challenge: the ticket itself, or an Ed25519 signature
// made with the key whose 32-byte seed (64 hex digits) was typed in; the seed never
// leaves the page (only the public key is sent, in HELLO's authextra).
function credentials(method, secret) {
  if (method === "ticket") return { authextra: undefined, answer: () => secret };
  if (!/^[0-9a-fA-F]{64}$/.test(secret)) throw new Error("the private key seed is 64 hex digits");
  const key = autobahn.nacl.sign.keyPair.fromSeed(autobahn.util.htob(secret.toLowerCase()));
  return {
    authextra: { pubkey: autobahn.util.btoh(key.publicKey) },
    answer: (extra) => autobahn.auth_cryptosign.sign_challenge(key, extra),
  };
}

function login() {
  const config = state.config;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const method = $("authmethod").value;
  $("login-error").textContent = "";
  let creds;
  try { creds = credentials(method, $("ticket").value.trim()); } catch (err) {
    $("login-error").textContent = String(err.message || err);
    return;
  }
  $("login-button").disabled = true;
  const connection = new autobahn.Connection({
    url: `${scheme}://${location.host}${config.url}`,
    realm: config.realm,
    authmethods: [method],
    authid: $("authid").value,
    authextra: creds.authextra,
    onchallenge: (session, challenged, extra) => {
      if (challenged !== method) throw new Error("unexpected authentication method " + challenged);
      return creds.answer(extra);
    },
    max_retries: 0,
    retry_if_unreachable: false,
  });
  state.connection = connection;
  connection.onopen = (session, details) => {
    if (details.authrole !== config.role) {
      $("login-error").textContent =
        `refused: ${details.authid} has role ${details.authrole}, the console needs ${config.role}`;
      state.refusedRole = true;
      connection.close("wamp.close.normal", "not the console role");
      return;
    }
    state.session = session;
    $("who").textContent = `${details.authid} (${details.authrole}) on ${config.realm}`;
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    joined(session).catch((err) => { $("login-error").textContent = errorText(err); });
  };
  connection.onclose = (reason, details) => {
    $("login-button").disabled = false;
    if (state.session === null && !state.refusedRole) {
      $("login-error").textContent = `login failed: ${details.reason || reason}` +
        (details.message ? ` (${details.message})` : "");
    }
    state.refusedRole = false;
    if (state.session !== null) {
      state.session = null;
      $("app").hidden = true; $("login").hidden = false; $("logout").hidden = true;
      $("who").textContent = "";
      $("login-error").textContent = `disconnected: ${details.reason || reason}`;
    }
    return true;  // never reconnect by itself
  };
  connection.open();
}

async function joined(session) {
  await session.subscribe("wamp.broker.on_status", (args) => nodeStatus(args[0]));
  const [nodes, rates] = await Promise.all([
    session.call("wamp.broker.node_list"), session.call("wamp.broker.stats_rates"),
  ]);
  for (const node of nodes) {
    if (node.local) nodeStatus(node); else state.nodes[node.node] = state.nodes[node.node] || { node: node.node };
  }
  prefillRates(rates);
  renderNodes();
  state.ticker = setInterval(tick, 1000);
  state.ready = true;
}

// --- nodes, realms, rates ---------------------------------------------------------------
function nodeStatus(status) {
  const now = Date.now() / 1000;
  const previous = state.lastTotals[status.node];
  if (previous && status.totals[0] > previous[0]) {
    const dt = status.totals[0] - previous[0];
    status.rates = status.totals.slice(1).map((v, i) => Math.max(0, (v - previous[i + 1]) / dt));
  }
  state.lastTotals[status.node] = status.totals;
  state.nodes[status.node] = { ...status, seen: now };
}

function tick() {
  const now = Date.now() / 1000;
  const point = [now, 0, 0, 0, 0, 0];
  for (const node of Object.values(state.nodes)) {
    if (node.rates && now - node.seen < 5) node.rates.forEach((v, i) => { point[i + 1] += v; });
  }
  state.series.push(point);
  if (state.series.length > HISTORY) state.series.shift();
  renderNodes();
  renderRealms();
  drawRates();
}

function prefillRates(rates) {
  const samples = rates.samples || [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    const dt = b[0] - a[0];
    if (dt > 0) state.series.push([b[0], ...b.slice(1).map((v, k) => Math.max(0, (v - a[k + 1]) / dt))]);
  }
  state.series = state.series.slice(-HISTORY);
}

function renderNodes() {
  const now = Date.now() / 1000;
  const rows = Object.values(state.nodes).sort((a, b) => a.node.localeCompare(b.node)).map((n) => {
    const stale = !n.seen || now - n.seen > 5;
    const link = el("span", stale ? (n.link ? n.link + " (stale)" : "no status yet") : n.link,
      { class: stale ? "stale" : n.link === "up" || n.link === "standalone" ? "up" : "down" });
    return row([n.node, link, n.redis_rtt == null ? "–" : (n.redis_rtt * 1000).toFixed(2) + " ms",
      n.sessions ?? "?", n.uptime == null ? "?" : duration(n.uptime), n.version || "?",
      n.seen ? new Date(n.seen * 1000).toLocaleTimeString() : "–"]);
  });
  fill("nodes-body", rows);
}

function renderRealms() {
  const realms = {};
  for (const n of Object.values(state.nodes)) {
    for (const [realm, count] of Object.entries(n.realms || {})) {
      realms[realm] = realms[realm] || { total: 0, nodes: {} };
      realms[realm].total += count;
      realms[realm].nodes[n.node] = count;
    }
  }
  fill("realms-body", Object.entries(realms).sort().map(([name, r]) => row([name, r.total, perNode(r.nodes)])));
}

function drawRates() {
  const canvas = $("rates-plot"), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 60, bottom = 20;
  ctx.clearRect(0, 0, w, h);
  const points = state.series;
  let max = 1;
  for (const p of points) for (let i = 1; i < p.length; i++) max = Math.max(max, p[i]);
  const scale = niceCeil(max);
  ctx.strokeStyle = "#e3e6ea"; ctx.fillStyle = "#5b6270"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = (h - bottom) - (h - bottom - 10) * i / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(formatRate(scale * i / 4), 4, y + 4);
  }
  ctx.fillText("-5 min", left, h - 5); ctx.fillText("now", w - 24, h - 5);
  const now = Date.now() / 1000;
  const x = (t) => left + (w - left) * (1 - (now - t) / HISTORY);
  const y = (v) => (h - bottom) - (h - bottom - 10) * v / scale;
  SERIES.forEach(([, , color], k) => {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((p, i) => { if (i) ctx.lineTo(x(p[0]), y(p[k + 1])); else ctx.moveTo(x(p[0]), y(p[k + 1])); });
    ctx.stroke();
  });
  const last = points[points.length - 1] || [0, 0, 0, 0, 0, 0];
  const legend = SERIES.map(([, label, color], k) => {
    const span = el("span"); const swatch = el("i"); swatch.style.background = color;
    span.append(swatch, `${label}: ${formatRate(last[k + 1])}/s`); return span;
  });
  $("rates-legend").replaceChildren(...legend);
}
function niceCeil(v) { const e = Math.pow(10, Math.floor(Math.log10(v))); return [1, 2, 5, 10].map((m) => m * e).find((c) => c >= v); }
function formatRate(v) { return v >= 1000 ? (v / 1000).toFixed(1) + "k" : v.toFixed(v < 10 ? 1 : 0); }

// --- paged tables -----------------------------------------------------------------------
async function loadPage(kind) {
  const search = $({ sessions: "session-search", subscriptions: "sub-search", registrations: "reg-search" }[kind]).value;
  const result = await state.session.call(`wamp.broker.${kind.replace(/s$/, "")}_page`, [],
    { offset: state.pages[kind], limit: PAGE, search });
  const { total, offset, rows } = result.kwargs;
  const range = { sessions: "session-range", subscriptions: "sub-range", registrations: "reg-range" }[kind];
  $(range).textContent = total ? `${offset + 1}–${offset + rows.length} of ${total}` : "none";
  state[kind + "Total"] = total;
  fill(kind + "-body", rows.map(RENDER[kind]));
}

const RENDER = {
  sessions: (s) => {
    const t = s.transport || {};
    const kill = el("button", "Kill", { class: "kill", "data-session": s.session });
    kill.addEventListener("click", () => killSession(s.session));
    return row([s.session, s.authid, s.authrole, t.type || "?", t.protocol || "?", t.peer || "?",
      s.node, when(s.joined), kill]);
  },
  subscriptions: (s) => row([s.id, s.uri, s.match, perNode(s.nodes)]),
  registrations: (r) => row([r.id, r.uri, r.match, r.invoke, perNode(r.nodes)]),
};

async function killSession(id) {
  const status = $("sessions-status");
  try {
    await state.session.call("wamp.session.kill", [id],
      { reason: $("kill-reason").value, message: $("kill-message").value });
    status.textContent = `killed session ${id}`;
  } catch (err) {
    status.textContent = `kill ${id} failed: ${errorText(err)}`;
  }
  await loadPage("sessions");
}

function wirePages() {
  for (const [kind, prefix] of [["sessions", "session"], ["subscriptions", "sub"], ["registrations", "reg"]]) {
    const reload = () => loadPage(kind).catch((err) => { $(prefix + "-range").textContent = errorText(err); });
    $(prefix + "-refresh").addEventListener("click", reload);
    $(prefix + "-search").addEventListener("input", () => { state.pages[kind] = 0; reload(); });
    $(prefix + "-prev").addEventListener("click", () => { state.pages[kind] = Math.max(0, state.pages[kind] - PAGE); reload(); });
    $(prefix + "-next").addEventListener("click", () => {
      if (state.pages[kind] + PAGE < (state[kind + "Total"] || 0)) { state.pages[kind] += PAGE; reload(); }
    });
  }
  $("pub-send").addEventListener("click", publish);
  $("call-send").addEventListener("click", call);
  $("watch-start").addEventListener("click", watch);
  $("watch-stop").addEventListener("click", unwatch);
}

function show(page) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.page === page);
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  if (page in state.pages) loadPage(page).catch(() => {});
  if (page === "rates") drawRates();
}

// --- tools ------------------------------------------------------------------------------
async function publish() {
  const out = $("pub-result");
  try {
    const topic = $("pub-topic").value.trim();
    const pub = await state.session.publish(topic, json("pub-args", []), json("pub-kwargs", {}),
      { acknowledge: true, exclude_me: false });  // the live events page shows it too
    out.textContent = `published to ${topic} (publication ${pub.id})`;
  } catch (err) {
    out.textContent = "error: " + errorText(err);
  }
}

async function call() {
  const out = $("call-result");
  try {
    const res = await state.session.call($("call-procedure").value.trim(), json("call-args", []), json("call-kwargs", {}));
    const value = res instanceof autobahn.Result ? { args: res.args, kwargs: res.kwargs } : res;
    out.textContent = JSON.stringify(value, null, 2);
  } catch (err) {
    out.textContent = "error: " + errorText(err);
  }
}

async function watch() {
  await unwatch();
  const topic = $("watch-topic").value.trim(), match = $("watch-match").value;
  try {
    state.watch = await state.session.subscribe(topic, (args, kwargs, details) => {
      const list = $("events-list");
      const item = el("li", `${new Date().toLocaleTimeString()} ${details.topic || topic} ` +
        JSON.stringify({ args, kwargs }));
      list.prepend(item);
      while (list.children.length > 200) list.lastChild.remove();
      state.events += 1;
    }, { match });
    $("watch-status").textContent = `watching ${topic} (${match})`;
  } catch (err) {
    $("watch-status").textContent = "error: " + errorText(err);
  }
}

async function unwatch() {
  if (state.watch) {
    const sub = state.watch; state.watch = null;
    try { await state.session.unsubscribe(sub); } catch (err) { /* session gone */ }
    $("watch-status").textContent = "stopped";
  }
}

start().catch((err) => { $("login-error").textContent = "cannot start: " + err; });
