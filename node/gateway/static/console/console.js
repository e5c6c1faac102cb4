// medianode console: status, library, uploads (tus), charts, tokens and S3 keys.
// No framework and nothing from elsewhere. The credential is a bearer token kept in this tab's
// sessionStorage and sent in the Authorization header; no cookie is ever used, so another site cannot
// act with it. A login link carries the token in its fragment (#login=...), read here and dropped from
// the address bar at once.

const TOKEN_KEY = "medianode.console.token";
const CHUNK = 8 * 1024 * 1024; // bytes per tus PATCH
const REFRESH = 5000;
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: "anonymous",
  span: 3600,
  library: [],
  tab: "overview",
};

// -- formatting -----------------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? Math.round(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${UNITS[i]}`;
}
const rate = (n) => `${bytes(n)}/s`;
function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
function ago(t) {
  const s = Date.now() / 1000 - t;
  return s < 60 ? "just now" : `${duration(s)} ago`;
}
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const shortCid = (c) => (c.length > 22 ? `${c.slice(0, 12)}…${c.slice(-8)}` : c);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

let toastTimer = 0;
function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Not a secure context (http on another host): the old way.
    const area = el("textarea", { readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied");
}
const copyButton = (text, label = "Copy") =>
  el("button", { type: "button", class: "ghost small", text: label, title: "Copy to the clipboard", onclick: () => copy(text) });

// -- the API ----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const h = { ...headers };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401 && state.token) expired();
    throw new ApiError(response.status, (data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

// -- login ------------------------------------------------------------------------------------------

function takeLoginFragment() {
  const hash = location.hash.slice(1);
  const params = new URLSearchParams(hash);
  const token = params.get("login");
  if (token === null) return;
  params.delete("login");
  const rest = params.toString().replace(/=$/, "");
  // Out of the address bar and the history entry before anything else runs.
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : "#overview"));
  state.token = token.trim();
  state.fromLink = true; // kept once checked: only the admin token logs in through a link
}

function expired() {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  setRole("anonymous", "Your login is no longer valid: the admin token changes each time serve starts.");
}

async function checkLogin(why) {
  if (!state.token) { setRole("anonymous", why); return; }
  const fromLink = state.fromLink;
  state.fromLink = false;
  try {
    const me = await api("/api/v1/console/whoami");
    if (fromLink && me.role !== "admin") {
      // A link someone else made could log this tab in as their upload token (and see what it uploads):
      // links carry the admin token only; an upload token is pasted.
      state.token = "";
      setRole("anonymous", null);
      showLoginError("That link does not carry this node's admin token; to use an upload token, paste it here.");
      return;
    }
    if (fromLink) sessionStorage.setItem(TOKEN_KEY, state.token);
    setRole(me.role, null, me);
  } catch (e) {
    if (fromLink && e.status === 401) {
      showLoginError("That login link is not valid any more: the admin token changes each time serve starts. Run medianode console for a new one.");
    } else if (e.status !== 401) {
      setRole(state.role, null);
    }
  }
}

function setRole(role, why, me = {}) {
  state.role = role;
  const badge = $("role-badge");
  badge.className = `badge ${role === "anonymous" ? "" : role}`;
  badge.textContent = role === "admin" ? "Admin" : role === "uploader" ? `Uploader · ${me.name}` : "Read-only";
  badge.title = role === "uploader" ? `Logged in with the upload token ${me.name}` : badge.textContent;
  document.body.dataset.role = role;
  $("logout").hidden = role === "anonymous";
  $("readonly-banner").hidden = role === "admin";
  const loopback = ["127.0.0.1", "localhost", "[::1]", "::1"].includes(location.hostname);
  $("readonly-title").textContent = role === "uploader" ? "Upload only." : "Read-only.";
  $("readonly-why").textContent = role === "uploader"
    ? "This upload token can upload files; pins, tokens and keys need the admin token."
    : why || (loopback ? "You are viewing this node's public status." : `You reached this node at ${location.host}, without a login: what you see is public.`);
  $("login-form").hidden = role !== "anonymous";
  $("paste-hint").hidden = role !== "anonymous";
  if (why && role === "anonymous" && state.everLoggedIn) showLoginError(why);
  for (const b of document.querySelectorAll(".needs-admin")) b.disabled = role !== "admin";
  const canUpload = role === "admin" || role === "uploader";
  $("upload-locked").hidden = canUpload;
  $("dropzone").classList.toggle("locked", !canUpload);
  $("file-input").disabled = !canUpload;
  $("access-locked").hidden = role === "admin";
  $("tokens-card").hidden = role !== "admin";
  $("keys-card").hidden = role !== "admin";
  if (role !== "anonymous") state.everLoggedIn = true;
  renderLibrary();
  if (role === "admin" && state.tab === "access") loadAccess();
}

function showLoginError(text) {
  const e = $("login-error");
  e.textContent = text;
  e.hidden = !text;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) return;
  state.token = token;
  try {
    const me = await api("/api/v1/console/whoami");
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login-token").value = "";
    showLoginError("");
    setRole(me.role, null, me);
    toast(me.role === "admin" ? "Logged in as admin" : `Logged in with upload token ${me.name}`);
  } catch (e) {
    state.token = "";
    showLoginError(e.status === 401 ? "That token is not valid here." : e.message);
  }
});

$("logout").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  setRole("anonymous", null);
  toast("Logged out of this tab");
});

// -- tabs -------------------------------------------------------------------------------------------

function showTab() {
  const name = location.hash.slice(1) || "overview";
  state.tab = ["overview", "library", "upload", "access"].includes(name) ? name : "overview";
  for (const p of document.querySelectorAll("[data-panel]")) p.hidden = p.dataset.panel !== state.tab;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("on", a.dataset.tab === state.tab);
  if (state.tab === "library") loadLibrary();
  if (state.tab === "access" && state.role === "admin") loadAccess();
  if (state.tab === "overview") { loadStatus(); loadHistory(); }
}
window.addEventListener("hashchange", () => { takeLoginFragment(); if (state.token) checkLogin(); showTab(); });

// -- status -----------------------------------------------------------------------------------------

async function loadStatus() {
  let s;
  try { s = await api("/api/v1/console/status"); } catch { return; }
  const st = s.storage;
  $("st-used").textContent = bytes(st.used);
  $("st-quota").textContent = st.quota ? bytes(st.quota) : "no quota";
  $("st-pinned").textContent = bytes(st.pinned);
  $("st-cache").textContent = bytes(st.cache);
  $("st-free").textContent = st.quota ? bytes(Math.max(0, st.quota - st.used)) : "unlimited";
  const whole = st.quota || Math.max(st.used, 1);
  // A sliver stays visible however small the share: something is stored.
  const share = (n) => (n > 0 ? `${Math.min(100, Math.max(0.8, (100 * n) / whole))}%` : "0");
  $("st-meter-pinned").style.width = share(st.pinned);
  $("st-meter-cache").style.width = share(st.cache);
  $("st-meter").setAttribute("aria-label", `${bytes(st.used)} used of ${st.quota ? bytes(st.quota) : "no quota"}`);
  $("st-pins").textContent = st.pins.toLocaleString();
  $("st-blocks").textContent = st.blocks.toLocaleString();
  $("st-peers").textContent = s.peers;
  $("st-dht").textContent = s.dht ? "connected · DHT on" : "connected · DHT off";
  $("st-viewers").textContent = s.viewers;
  $("st-uptime").textContent = duration(s.uptime);
  $("st-version").textContent = s.version;
  $("st-peer-id").textContent = s.peer_id || "no swarm";
  const addrs = $("st-addrs");
  addrs.replaceChildren(...(s.swarm_addrs.length ? s.swarm_addrs : []).map((a) => el("li", {}, el("code", { text: a }), copyButton(a))));
  if (!s.swarm_addrs.length) addrs.append(el("li", {}, el("span", { class: "sub", text: "Not listening on any address other nodes can dial." })));
}

// -- charts -----------------------------------------------------------------------------------------

const SPANS = { 900: "15 minutes", 3600: "hour", 86400: "24 hours" };
const CHARTS = [
  { id: "chart-http", series: [{ key: "http", label: "HTTP served", color: "var(--c1)" }] },
  { id: "chart-bitswap", series: [{ key: "bitswap", label: "served to peers", color: "var(--c1)" }, { key: "bitswap_fetched", label: "fetched from peers", color: "var(--c3)" }] },
  { id: "chart-viewers", series: [{ key: "viewers_peers", label: "viewer to viewer", color: "var(--c4)" }, { key: "viewers_http", label: "viewers over HTTP", color: "var(--c2)" }] },
  { id: "chart-storage", gauge: true, series: [{ key: "used", label: "on disk", color: "var(--c1)" }, { key: "pinned", label: "pinned", color: "var(--c3)" }] },
];

async function loadHistory() {
  let h;
  try { h = await api(`/api/v1/console/history?span=${state.span}`); } catch { return; }
  for (const chart of CHARTS) drawChart(chart, h);
}

function niceMax(v) {
  v = Math.max(v, 1024); // an idle chart still has a readable scale
  let unit = 1;
  while (v / unit >= 1024) unit *= 1024; // round in the unit the axis shows (KiB, MiB...)
  const u = v / unit;
  const p = 10 ** Math.floor(Math.log10(u));
  for (const m of [1, 2, 2.5, 5, 10]) if (u <= m * p) return m * p * unit;
  return 10 * p * unit;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function drawChart(chart, h) {
  const fig = $(chart.id);
  const plot = fig.querySelector(".plot");
  const t = h.t;
  const lines = chart.series.map((s) => ({ ...s, values: ((chart.gauge ? h.gauges : h.rates)[s.key] || []).map((v) => v ?? 0) }));
  const all = lines.flatMap((l) => l.values);
  const peak = all.length ? Math.max(...all) : 0;
  const total = chart.gauge ? (lines[0].values.at(-1) ?? 0) : lines.reduce((sum, l) => sum + (h.totals[l.key] || 0), 0);
  fig.dataset.total = String(total);
  fig.dataset.points = String(t.length);
  fig.querySelector(".total").textContent = chart.gauge ? bytes(total) : `${bytes(total)} in the last ${SPANS[h.span] || duration(h.span)}`;
  const width = plot.clientWidth || 400, height = plot.clientHeight || 150;
  const left = 58, right = 6, top = 8, bottom = 20;
  const w = Math.max(10, width - left - right), hh = height - top - bottom;
  const max = niceMax(peak);
  const end = t.length ? t.at(-1) : Date.now() / 1000;
  // Each value covers the interval that ends at its time: drawn as steps, so one interval is visible too.
  const from = t.map((at, i) => (i ? t[i - 1] : at - h.step));
  // The time axis spans what was sampled, at least a minute, at most the span asked for.
  const start = t.length ? Math.max(end - h.span, Math.min(from[0], end - 60)) : end - h.span;
  const domain = end - start;
  const x = (at) => left + ((at - start) / domain) * w;
  const y = (v) => top + hh - (v / max) * hh;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": fig.querySelector("figcaption").firstChild.textContent.trim() });
  for (const f of [0, 0.5, 1]) {
    const gy = y(max * f);
    root.append(svg("line", { class: "grid", x1: left, x2: left + w, y1: gy, y2: gy }));
    const label = svg("text", { class: "axis", x: left - 6, y: gy + 3, "text-anchor": "end" });
    label.textContent = chart.gauge ? bytes(max * f) : rate(max * f);
    root.append(label);
  }
  for (const [at, anchor] of [[start, "start"], [start + domain / 2, "middle"], [end, "end"]]) {
    const label = svg("text", { class: "axis", x: x(at), y: height - 4, "text-anchor": anchor });
    label.textContent = domain < 600 ? new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : clock(at);
    root.append(label);
  }
  for (const line of lines) {
    if (!line.values.length) continue;
    const pts = line.values.flatMap((v, i) => chart.gauge
      ? [`${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`]
      : [`${x(from[i]).toFixed(1)},${y(v).toFixed(1)}`, `${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`]);
    if (pts.length === 1) pts.unshift(`${x(from[0]).toFixed(1)},${pts[0].split(",")[1]}`);
    const first = pts[0].split(",")[0], last = pts.at(-1).split(",")[0];
    root.append(svg("path", { class: "area", fill: line.color, d: `M${first},${y(0)} L${pts.join(" L")} L${last},${y(0)} Z` }));
    root.append(svg("path", { class: "line", stroke: line.color, d: `M${pts.join(" L")}` }));
  }
  const cursor = svg("line", { class: "cursor", y1: top, y2: top + hh, x1: left, x2: left, visibility: "hidden" });
  root.append(cursor);
  const tip = el("div", { class: "tip", hidden: true });
  root.addEventListener("pointermove", (event) => {
    if (!t.length) return;
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const at = start + ((px - left) / w) * domain;
    let i = 0;
    while (i < t.length - 1 && Math.abs(t[i + 1] - at) < Math.abs(t[i] - at)) i++;
    cursor.setAttribute("x1", x(t[i])); cursor.setAttribute("x2", x(t[i])); cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(el("div", { text: clock(t[i]) }), ...lines.map((l) => el("div", {}, el("i", { class: `dot ${l.color.slice(6, 8)}` }), `${l.label}: ${chart.gauge ? bytes(l.values[i]) : rate(l.values[i])}`)));
    tip.hidden = false;
    const tx = (x(t[i]) / width) * box.width;
    tip.style.left = `${Math.min(box.width - 170, Math.max(0, tx + 10))}px`;
  });
  root.addEventListener("pointerleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  const keys = el("div", { class: "keys" }, lines.map((l) => el("span", {}, el("i", { class: `dot ${l.color.slice(6, 8)}` }), l.label)));
  const parts = [root, tip];
  if (!t.length) parts.push(el("div", { class: "nodata", text: "Collecting samples…" }));
  plot.replaceChildren(...parts);
  const old = fig.querySelector(".keys");
  if (old) old.replaceWith(keys); else fig.append(keys);
}

for (const b of document.querySelectorAll("#span-control button")) {
  b.addEventListener("click", () => {
    state.span = Number(b.dataset.span);
    for (const o of document.querySelectorAll("#span-control button")) o.classList.toggle("on", o === b);
    loadHistory();
  });
}
let resizeTimer = 0;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(loadHistory, 150); });

// -- library ----------------------------------------------------------------------------------------

async function loadLibrary() {
  let lib;
  try { lib = await api("/api/v1/console/library"); } catch { return; }
  state.library = lib.items;
  state.pending = lib.pending;
  renderLibrary();
}

function kindLabel(item) {
  if (item.kind === "directory") return "folder";
  const [type, sub = ""] = (item.media_type || "").split(";")[0].split("/");
  if (type !== "application") return type || "file";
  const name = sub.split(/[+.-]/).pop();
  return name === "stream" || !name ? "file" : name;
}

function renderLibrary() {
  const list = $("lib-items");
  if (!list) return;
  const q = $("lib-filter").value.trim().toLowerCase();
  const items = state.library.filter((i) => !q || [i.name, i.cid, i.media_type].some((v) => (v || "").toLowerCase().includes(q)));
  $("lib-empty").hidden = state.library.length > 0;
  list.replaceChildren(...items.map(libraryItem));
  const pending = $("lib-pending");
  pending.replaceChildren(...(state.pending || []).map((p) => el("li", { class: p.state },
    p.state === "fetching" ? el("span", { class: "spinner", "aria-hidden": "true" }) : null,
    el("span", { text: p.state === "fetching" ? `Fetching from the swarm · ${p.blocks} blocks${p.bytes ? `, ${bytes(p.bytes)}` : ""}` : `Could not pin: ${p.error}` }),
    el("code", { text: p.cid }),
    p.state === "failed" && state.role === "admin" ? el("button", { type: "button", class: "ghost small", text: "Dismiss", onclick: () => dismissPending(p.cid) }) : null,
  )));
}

function libraryItem(item) {
  const mt = item.media_type || "";
  const thumb = el("div", { class: "thumb noimg" }, el("span", { class: "kind", text: kindLabel(item) }));
  const playable = mt.startsWith("video/") || mt.startsWith("audio/");
  if (mt.startsWith("video/") || (mt.startsWith("image/") && item.size <= 8 * 1024 * 1024)) {
    // A video's poster (the node makes one per clip), an image itself.
    const src = mt.startsWith("video/") ? `/api/v1/poster/${item.cid}` : `/ipfs/${item.cid}`;
    const img = el("img", { alt: "", loading: "lazy", decoding: "async", src });
    img.addEventListener("error", () => { img.remove(); thumb.classList.add("noimg"); }); // no poster: the kind shows
    thumb.classList.remove("noimg");
    thumb.append(img);
  }
  const v = item.viewers || {};
  const fromPeers = v.bytes_from_peers || 0, fromHttp = v.bytes_from_http || 0;
  const share = fromPeers + fromHttp;
  const stats = el("div", { class: "stats" });
  if (playable) {
    const bar = el("div", { class: "p2pbar", title: "viewers: from peers vs over HTTP" }, el("span", { class: "peers" }), el("span", { class: "http" }));
    bar.children[0].style.width = share ? `${(100 * fromPeers) / share}%` : "0";
    bar.children[1].style.width = share ? `${(100 * fromHttp) / share}%` : "0";
    stats.append(
      el("span", { text: `Viewers: ${bytes(fromPeers)} peer-to-peer · ${bytes(fromHttp)} HTTP${share ? ` (${Math.round((100 * fromPeers) / share)}% p2p)` : ""}` }),
      bar,
      el("span", { text: `${v.viewers || 0} watching now · ${v.viewers_seen || 0} in the last hour` }),
    );
  }
  const replicas = item.replicas_wanted
    ? `Replicas ${item.replicas.length}/${item.replicas_wanted}${item.replicas.length ? `: ${item.replicas.map((p) => shortCid(p)).join(", ")}` : ""}`
    : item.replicas.length ? `Replicas on ${item.replicas.map((p) => shortCid(p)).join(", ")}` : "No replicas requested";
  stats.append(el("span", { text: replicas, title: item.replicas.join("\n") }));
  const actions = el("div", { class: "actions" },
    playable ? el("a", { class: "button", href: `/watch/${item.cid}`, target: "_blank", rel: "noopener noreferrer", text: "Watch" }) : null,
    el("a", { href: `/ipfs/${item.cid}`, target: "_blank", rel: "noopener noreferrer", text: "Open" }),
    el("span", { class: "spacer" }),
    state.role === "admin" ? el("button", { type: "button", class: "danger small", text: "Unpin", onclick: () => unpin(item) }) : null,
  );
  return el("li", { class: "item", "data-cid": item.cid, "data-peers": String(fromPeers), "data-http": String(fromHttp) },
    thumb,
    el("div", { class: "body" },
      el("div", { class: "name", text: item.name || "(no name)", title: item.name || "" }),
      el("div", { class: "meta" }, el("span", { text: item.size === null ? "?" : bytes(item.size) }), el("span", { text: mt || item.kind }), el("span", { text: `pinned ${ago(item.pinned_at)}` })),
      el("div", { class: "cidrow" }, el("code", { text: item.cid, title: item.cid }), copyButton(item.cid, "Copy CID")),
      stats,
    ),
    actions,
  );
}

$("lib-filter").addEventListener("input", renderLibrary);

async function unpin(item) {
  if (!confirm(`Unpin ${item.name || item.cid}? Its blocks stay as cache until gc or the quota evicts them.`)) return;
  try {
    await api(`/api/v1/console/pins/${item.cid}`, { method: "DELETE" });
    toast("Unpinned");
  } catch (e) {
    toast(`Unpin failed: ${e.message}`);
  }
  loadLibrary();
}

async function dismissPending(cid) {
  try { await api(`/api/v1/console/pending/${cid}`, { method: "DELETE" }); } catch { /* gone already */ }
  loadLibrary();
}

function pinMessage(text, kind = "") {
  const m = $("pin-msg");
  m.className = `note ${kind}`;
  m.textContent = text;
  m.hidden = !text;
}

$("pin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const cid = $("pin-cid").value.trim();
  if (!cid) return;
  try {
    const r = await api("/api/v1/console/pins", { method: "POST", body: { cid, replicas: Number($("pin-replicas").value) || 0 } });
    pinMessage(r.fetching ? `Fetching ${cid} from the swarm; it is pinned once every block has arrived.` : `Pinned ${cid}.`);
    $("pin-cid").value = "";
  } catch (e) {
    pinMessage(e.message, "error");
  }
  loadLibrary();
});

// -- upload (tus 1.0.0) -----------------------------------------------------------------------------

function b64(text) {
  let s = "";
  for (const byte of new TextEncoder().encode(text)) s += String.fromCharCode(byte);
  return btoa(s);
}

function authHeaders(extra = {}) {
  return { "Tus-Resumable": "1.0.0", Authorization: `Bearer ${state.token}`, ...extra };
}

function patch(url, blob, offset, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    for (const [k, v] of Object.entries(authHeaders({ "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" }))) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
    xhr.addEventListener("load", () => resolve(xhr));
    xhr.addEventListener("error", () => reject(new ApiError(0, "the connection broke")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted")));
    xhr.send(blob);
  });
}

async function errorOf(response) {
  try { return (await response.json()).error || response.statusText; } catch { return `${response.status} ${response.statusText}`; }
}

async function tusUpload(file, ui) {
  const resumeKey = `medianode.tus:${file.name}:${file.size}:${file.lastModified}`;
  let url = localStorage.getItem(resumeKey);
  let offset = 0;
  if (url) {
    const head = await fetch(url, { method: "HEAD", headers: authHeaders(), cache: "no-store" });
    if (head.ok) { offset = Number(head.headers.get("Upload-Offset")); ui.resumed(offset); } else { url = null; }
  }
  if (!url) {
    const pin = $("upload-pin").checked ? "" : "?pin=false";
    const created = await fetch(`/api/v1/uploads${pin}`, {
      method: "POST",
      headers: authHeaders({ "Upload-Length": String(file.size), "Upload-Metadata": `filename ${b64(file.name)}` }),
    });
    if (created.status === 401) expired();
    if (created.status !== 201) throw new ApiError(created.status, await errorOf(created));
    url = created.headers.get("Location");
    localStorage.setItem(resumeKey, url); // where to resume from; the token is not kept here
  }
  let failures = 0;
  for (;;) {
    const end = Math.min(file.size, offset + CHUNK);
    let xhr;
    try {
      xhr = await patch(url, file.slice(offset, end), offset, (sent) => ui.progress(offset + sent));
    } catch (e) {
      if (++failures > 5) throw e;
      ui.status(`connection broke; resuming (${failures}/5)…`);
      await new Promise((r) => setTimeout(r, 1000 * failures));
      const head = await fetch(url, { method: "HEAD", headers: authHeaders(), cache: "no-store" });
      if (!head.ok) throw new ApiError(head.status, "the upload is gone on the node");
      offset = Number(head.headers.get("Upload-Offset"));
      continue;
    }
    if (xhr.status === 409 && xhr.getResponseHeader("Upload-Offset")) { offset = Number(xhr.getResponseHeader("Upload-Offset")); continue; }
    if (xhr.status === 401) expired();
    if (xhr.status !== 204 && xhr.status !== 200) {
      let reason = xhr.statusText;
      try { reason = JSON.parse(xhr.responseText).error || reason; } catch { /* not JSON */ }
      localStorage.removeItem(resumeKey);
      throw new ApiError(xhr.status, reason);
    }
    failures = 0;
    offset = Number(xhr.getResponseHeader("Upload-Offset"));
    ui.progress(offset);
    if (xhr.status === 200) {
      localStorage.removeItem(resumeKey);
      return JSON.parse(xhr.responseText);
    }
    if (offset >= file.size) throw new ApiError(500, "the node did not finish the upload");
  }
}

function uploadRow(file) {
  const bar = el("span");
  const state_ = el("span", { class: "state", text: "waiting" });
  const row = el("li", { class: "upload" },
    el("div", { class: "row" }, el("span", { class: "fname", text: file.name, title: file.name }), el("span", { class: "state", text: bytes(file.size) }), state_),
    el("div", { class: "bar" }, bar));
  const started = performance.now();
  return {
    row,
    progress(done) {
      const pct = file.size ? (100 * done) / file.size : 100;
      bar.style.width = `${pct}%`;
      const secs = (performance.now() - started) / 1000;
      state_.textContent = `${Math.floor(pct)}%${secs > 1 ? ` · ${rate(done / secs)}` : ""}`;
    },
    resumed(offset) { this.progress(offset); state_.textContent += " · resumed"; },
    status(text) { state_.textContent = text; },
    done(result) {
      row.classList.add("done");
      bar.style.width = "100%";
      state_.textContent = "stored";
      const json = JSON.stringify(result.attachment, null, 2);
      row.append(
        el("div", { class: "row result" },
          el("code", { text: result.cid, title: "CID" }),
          copyButton(result.cid, "Copy CID"),
          el("a", { href: `/ipfs/${result.cid}`, target: "_blank", rel: "noopener noreferrer", text: "Open" }),
          result.mediaType && /^(video|audio)\//.test(result.mediaType) ? el("a", { href: `/watch/${result.cid}`, target: "_blank", rel: "noopener noreferrer", text: "Watch" }) : null,
          el("span", { class: "spacer" }),
          copyButton(json, "Copy attachment JSON"),
        ),
        el("pre", { class: "json", text: json }),
      );
      row.dataset.cid = result.cid;
    },
    failed(message) { row.classList.add("failed"); state_.textContent = `failed: ${message}`; },
  };
}

async function uploadFiles(files) {
  if (state.role !== "admin" && state.role !== "uploader") { toast("Log in to upload"); return; }
  const rows = [...files].map((f) => [f, uploadRow(f)]);
  $("uploads").prepend(...rows.map(([, ui]) => ui.row));
  for (const [file, ui] of rows) { // one at a time: each gets the bandwidth
    try {
      ui.done(await tusUpload(file, ui));
    } catch (e) {
      ui.failed(e.message);
    }
  }
  loadLibrary();
}

$("file-input").addEventListener("change", (event) => {
  const files = event.target.files;
  if (files && files.length) uploadFiles(files);
  event.target.value = "";
});
const zone = $("dropzone");
for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
for (const name of ["dragleave", "drop"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
zone.addEventListener("drop", (e) => { if (e.dataTransfer && e.dataTransfer.files.length) uploadFiles(e.dataTransfer.files); });
window.addEventListener("dragover", (e) => e.preventDefault()); // a file dropped beside the zone is not opened
window.addEventListener("drop", (e) => e.preventDefault());

// -- tokens and S3 keys -------------------------------------------------------------------------------

async function loadAccess() {
  try {
    const [tokens, keys] = await Promise.all([api("/api/v1/console/tokens"), api("/api/v1/console/s3/keys")]);
    renderTokens(tokens.tokens);
    renderKeys(keys.keys);
  } catch (e) {
    toast(e.message);
  }
}

const cell = (label, ...content) => el("td", { "data-label": label }, ...content);
const emptyRow = (cols, text) => el("tr", { class: "emptyrow" }, el("td", { colspan: String(cols), text }));

function renderTokens(tokens) {
  const body = $("token-table").querySelector("tbody");
  body.replaceChildren(...(tokens.length ? tokens.map((t) => el("tr", { "data-name": t.name },
    cell("Name", el("b", { text: t.name }), t.console ? el("div", { class: "tag", text: "uploads made in this console" }) : null),
    cell("Used", bytes(t.used)),
    cell("Limit", t.limit ? bytes(t.limit) : "unlimited"),
    cell("Created", ago(t.created)),
    cell("", el("button", { type: "button", class: "danger small", text: "Revoke", onclick: () => revoke("tokens", t.name, `token ${t.name}`) })),
  )) : [emptyRow(5, "No upload tokens yet.")]));
}

function renderKeys(keys) {
  const body = $("key-table").querySelector("tbody");
  body.replaceChildren(...(keys.length ? keys.map((k) => el("tr", { "data-name": k.name },
    cell("Name", el("b", { text: k.name })),
    cell("Access key ID", el("code", { text: k.access_key_id })),
    cell("Buckets", k.buckets.join(", ") || "–"),
    cell("Used", bytes(k.used)),
    cell("Limit", k.limit ? bytes(k.limit) : "unlimited"),
    cell("", el("button", { type: "button", class: "danger small", text: "Revoke", onclick: () => revoke("s3/keys", k.name, `S3 key ${k.name}`) })),
  )) : [emptyRow(6, "No S3 keys yet.")]));
}

async function revoke(kind, name, what) {
  if (!confirm(`Revoke ${what}? Anything using it stops working at once.`)) return;
  try {
    await api(`/api/v1/console/${kind}/${encodeURIComponent(name)}`, { method: "DELETE" });
    toast(`Revoked ${what}`);
  } catch (e) {
    toast(`Revoke failed: ${e.message}`);
  }
  loadAccess();
}

function showSecret(box, title, rows) {
  box.replaceChildren(
    el("strong", { text: title }),
    el("span", { class: "sub", text: "Copy it now: it is shown only this once." }),
    ...rows.map(([label, value]) => el("div", { class: "srow" }, el("span", { text: label }), el("code", { class: "secret-value", text: value }), copyButton(value))),
    el("div", {}, el("button", { type: "button", class: "ghost small", text: "Done", onclick: () => { box.hidden = true; box.replaceChildren(); } })),
  );
  box.hidden = false;
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const t = await api("/api/v1/console/tokens", { method: "POST", body: { name: $("token-name").value, limit: $("token-limit").value } });
    showSecret($("token-secret"), `Token ${t.name} created`, [["Token", t.token]]);
    $("token-name").value = ""; $("token-limit").value = "";
  } catch (e) {
    toast(e.message);
  }
  loadAccess();
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const buckets = $("key-buckets").value.split(",").map((b) => b.trim()).filter(Boolean);
  try {
    const k = await api("/api/v1/console/s3/keys", { method: "POST", body: { name: $("key-name").value, limit: $("key-limit").value, buckets } });
    showSecret($("key-secret"), `S3 key ${k.name} created`, [["Access key ID", k.access_key_id], ["Secret access key", k.secret_access_key]]);
    $("key-name").value = ""; $("key-limit").value = ""; $("key-buckets").value = "";
  } catch (e) {
    toast(e.message);
  }
  loadAccess();
});

// -- start ------------------------------------------------------------------------------------------

takeLoginFragment();
setRole("anonymous", null);
checkLogin().then(showTab);
setInterval(() => {
  if (document.hidden) return;
  if (state.tab === "overview") { loadStatus(); loadHistory(); }
  if (state.tab === "library") loadLibrary();
}, REFRESH);
setInterval(() => { if (!document.hidden && state.token) checkLogin(); }, 30000);
