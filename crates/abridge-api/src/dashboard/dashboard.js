// The abridge dashboard: a client of the /v1 API with the token pasted at sign-in (or given in
// the URL's fragment by `abridge up`). Open batches follow their event streams; the rest is
// polled (every second for the fleet's figures, every fifteen for the batch list, every ten
// for the chart). It updates the page in place, row by row, so a button never disappears
// under the pointer between two refreshes.
// Everything shown is set as text (never as HTML), since names, errors and summaries come from
// producers and videos.
"use strict";

const TOKEN_KEY = "abridge.token";
const REFRESH_MS = 1000;
const HISTORY_MS = 10000;
// The batch list is read again this often (to find new batches) or after an action; the open
// batches on it follow their event streams in between.
const LIST_MS = 15000;
const ITEM_PAGE = 200;

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem(TOKEN_KEY) || "";
let selected = null; // the batch whose items are shown
let selectedItem = null; // the item whose summary is shown
let timer = null;
let lastHistory = 0;
let lastList = 0;
let listPage = null; // the batch list as last read

// ---- HTTP ----------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, method = "GET", body = undefined) {
  const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) throw new Unauthorized("the token was refused");
  const answer = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = answer && answer.error ? answer.error.message : res.status + " " + res.statusText;
    throw new Error(method + " " + path + ": " + msg);
  }
  return answer;
}

// ---- DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

// Makes `tbody` hold one row per entry of `list`, in order: rows are made by `create` once per
// key and refreshed by `update` at every call; rows whose key is gone are removed.
function reconcile(tbody, list, key, create, update) {
  const existing = new Map();
  for (const row of tbody.rows) existing.set(row.dataset.key, row);
  let prev = null;
  for (const entry of list) {
    const k = String(key(entry));
    let row = existing.get(k);
    if (row) existing.delete(k);
    else {
      row = create(entry);
      row.dataset.key = k;
    }
    update(row, entry);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const row of existing.values()) row.remove();
}

// A button that asks to be clicked a second time within four seconds before it acts.
function confirmButton(label, armedLabel, action) {
  const b = el("button", { type: "button" }, label);
  let disarm = null;
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    if (!b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = armedLabel;
      disarm = setTimeout(() => { b.classList.remove("armed"); b.textContent = label; }, 4000);
      return;
    }
    clearTimeout(disarm);
    b.classList.remove("armed");
    b.textContent = label;
    b.disabled = true;
    try { await action(); showError(""); } catch (e) { showError(e.message); }
    b.disabled = false;
    refreshList();
  });
  return b;
}

function actionButton(label, action) {
  const b = el("button", { type: "button" }, label);
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    b.disabled = true;
    try { await action(); showError(""); } catch (e) { showError(e.message); }
    b.disabled = false;
    refreshList();
  });
  return b;
}

function showError(msg) { setText($("error"), msg); }

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(iso).toLocaleDateString();
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function statusBadge(node, status) {
  node.className = "status " + status;
  setText(node, status);
}

function shortId(id) { return String(id).slice(0, 8); }

// ---- Tiles and workers ---------------------------------------------------------------------

// A tenant token sees its own items only; the fleet's depth and workers are the operator's.
let operatorView = false;
let tenantsListed = false;

// The operator's filter of the batch list by tenant, filled once from /v1/tenants.
async function listTenants() {
  if (tenantsListed) return;
  tenantsListed = true;
  const page = await api("/v1/tenants");
  const select = $("tenant-filter");
  select.replaceChildren(el("option", { value: "" }, "every tenant"),
    ...page.tenants.map((t) => el("option", { value: t.name }, "tenant " + t.name)));
}

function renderStats(stats) {
  const fleet = stats.scope !== "tenant";
  operatorView = fleet;
  $("tenant-filter").hidden = !fleet;
  if (fleet) listTenants().catch((e) => { tenantsListed = false; showError(e.message); });
  $("workers-section").hidden = !fleet;
  $("t-workers-tile").hidden = !fleet;
  // Pause and resume are the operator's: only the fleet's figures carry the queue's state.
  const paused = fleet && !!stats.paused_at;
  $("paused").hidden = !paused;
  $("paused").title = paused ? "since " + stats.paused_at : "";
  $("pause").hidden = !fleet;
  setText($("pause"), paused ? "Resume queue" : "Pause queue");
  $("pause").dataset.paused = paused ? "1" : "";
  if (!fleet) {
    const n = stats.items;
    setText($("queue-name"), "tenant " + stats.tenant);
    setText($("t-ready-label"), "Queued");
    setText($("t-ready"), n.queued);
    setText($("t-ready-split"), stats.queue_share == null ? "" : Math.round(stats.queue_share * 100) + "% of the queue");
    setText($("t-delayed-label"), "Succeeded");
    setText($("t-delayed"), n.succeeded);
    setText($("t-leased-label"), "Running");
    setText($("t-leased"), n.running);
    setText($("t-failed-label"), "Failed");
    setText($("t-failed"), n.failed);
    return;
  }
  const d = stats.depth;
  setText($("queue-name"), "queue " + stats.queue);
  setText($("t-ready"), d.high + d.normal + d.low);
  setText($("t-ready-split"), "high " + d.high + " · normal " + d.normal + " · low " + d.low);
  setText($("t-delayed"), stats.delayed);
  setText($("t-leased"), stats.leased);
  setText($("t-workers"), stats.workers.length);
  setText($("t-failed"), stats.failed);
  $("workers-empty").hidden = stats.workers.length > 0;
  reconcile($("workers").tBodies[0], stats.workers, (w) => w.id,
    () => el("tr", {}, el("td"), el("td"), el("td"), el("td"), el("td"), el("td")),
    (row, w) => {
      const c = row.cells;
      setText(c[0], shortId(w.id));
      c[0].title = w.id;
      setText(c[1], w.host);
      setText(c[2], w.pid);
      setText(c[3], w.heartbeat_age_s.toFixed(1) + " s");
      setText(c[4], w.items_in_hand + " / " + w.concurrency);
      setText(c[5], ago(w.started_at));
    });
}

// ---- Batches -------------------------------------------------------------------------------

function batchRow(b) {
  const bar = el("div", { class: "bar" },
    el("span", { class: "ok" }), el("span", { class: "fail" }),
    el("span", { class: "cancel" }), el("span", { class: "run" }));
  const cancel = confirmButton("Cancel", "Confirm cancel", () => api("/v1/batches/" + b.id + "/cancel", "POST"));
  cancel.dataset.action = "cancel";
  const retry = actionButton("Retry failed", () => api("/v1/batches/" + b.id + "/retry", "POST"));
  retry.dataset.action = "retry";
  const zip = actionButton("ZIP", () => downloadZip(b.id));
  zip.dataset.action = "zip";
  zip.title = "Download the summaries, index.csv and batch.json";
  const row = el("tr", { class: "clickable batch", "data-batch": b.id, onclick: () => select(b) },
    el("td", {}, el("span", { class: "name" }), el("br"), el("span", { class: "muted id" }),
      el("span", { class: "muted tenant" })),
    el("td", {}, el("span")),
    el("td"),
    el("td", {}, bar, el("span", { class: "progress-text" })),
    el("td", { class: "eta" }),
    el("td", { class: "created" }),
    el("td", { class: "actions" }, cancel, " ", retry, " ", zip));
  return row;
}

function updateBatchRow(row, b) {
  const c = row.cells;
  setText(c[0].querySelector(".name"), b.name || "(unnamed)");
  setText(c[0].querySelector(".id"), shortId(b.id));
  // Only an operator sees other owners' batches: it is told whose each is.
  setText(c[0].querySelector(".tenant"), operatorView ? " · " + (b.tenant ? "tenant " + b.tenant : "CLI / operator") : "");
  c[0].title = b.id;
  statusBadge(c[1].firstChild, b.status);
  setText(c[2], b.priority);
  const n = b.counts, total = Math.max(1, b.total);
  const parts = c[3].querySelector(".bar").children;
  const widths = [n.succeeded, n.failed, n.cancelled, n.running];
  widths.forEach((v, i) => { parts[i].style.width = (100 * v / total).toFixed(2) + "%"; });
  const done = n.succeeded + n.failed + n.cancelled;
  let text = done + " / " + b.total + " done";
  if (n.running) text += " · " + n.running + " running";
  if (n.failed) text += " · " + n.failed + " failed";
  if (n.cancelled) text += " · " + n.cancelled + " cancelled";
  const cost = b.cost;
  if (cost && (cost.requests > 0 || cost.max_cost_usd !== null)) {
    text += " · $" + cost.spent_usd.toFixed(4);
    if (cost.estimate_rest_usd) text += " (~$" + cost.estimate_rest_usd.toFixed(4) + " more)";
    if (cost.max_cost_usd !== null) text += " of $" + cost.max_cost_usd;
  }
  setText(c[3].querySelector(".progress-text"), text);
  c[3].querySelector(".progress-text").dataset.done = done;
  setText(c[4], b.status === "completed" || b.status === "cancelled" ? "" : duration(b.eta_seconds));
  setText(c[5], ago(b.created_at));
  const open = b.status === "pending" || b.status === "running";
  c[6].querySelector("[data-action=cancel]").hidden = !open;
  c[6].querySelector("[data-action=retry]").hidden = !(n.failed > 0 && b.status !== "cancelled");
  row.classList.toggle("selected", selected !== null && selected.id === b.id);
}

// Reads the batch list at the next refresh instead of waiting for its turn.
function refreshList() {
  listPage = null;
  refresh();
}

// One event stream per open batch on the list (GET /v1/batches/{id}/events, read with fetch:
// EventSource cannot send the token). A stream that drops is opened again with
// Last-Event-ID; one the server refuses (at the streams cap, say) leaves the batch to the
// list's own refresh.
const streams = new Map(); // batch id -> AbortController

function followOpen(page) {
  const open = new Set(page.batches.filter((b) => b.status === "pending" || b.status === "running").map((b) => b.id));
  for (const [id, ctrl] of streams) if (!open.has(id)) { ctrl.abort(); streams.delete(id); }
  for (const id of open) if (!streams.has(id)) streamBatch(id);
}

function stopStreams() {
  for (const ctrl of streams.values()) ctrl.abort();
  streams.clear();
}

async function streamBatch(id) {
  const ctrl = new AbortController();
  streams.set(id, ctrl);
  let lastId = null;
  let failures = 0;
  while (!ctrl.signal.aborted && failures <= 5) {
    try {
      const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch("/v1/batches/" + id + "/events", { headers, signal: ctrl.signal });
      if (res.status === 204) break; // the final event was already seen
      if (!res.ok) { failures = 6; break; }
      failures = 0;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (!ev) continue;
          if (ev.id) lastId = ev.id;
          batchChanged(JSON.parse(ev.data));
          if (ev.name === "completed" || ev.name === "cancelled") {
            ctrl.abort();
            break;
          }
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) break;
      failures += 1;
    }
    if (!ctrl.signal.aborted) await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** failures)));
  }
  if (streams.get(id) === ctrl) streams.delete(id);
}

// One Server-Sent Event block: its name, id and data (null for a comment).
function parseEvent(block) {
  let name = "message", id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, id, data: data.join("\n") } : null;
}

// A batch's new state from its stream: its row, and the list as last read.
function batchChanged(view) {
  if (!listPage) return;
  const i = listPage.batches.findIndex((b) => b.id === view.id);
  if (i < 0) return;
  listPage.batches[i] = view;
  renderBatches(listPage);
}

function renderBatches(page) {
  $("batches-empty").hidden = page.batches.length > 0;
  reconcile($("batches").tBodies[0], page.batches, (b) => b.id, batchRow, updateBatchRow);
  if (selected) {
    const fresh = page.batches.find((b) => b.id === selected.id);
    if (fresh) selected = fresh;
  }
}

// The export needs the token in a header, which a plain link cannot send: fetch it, then hand
// the bytes to the browser as a download.
async function downloadZip(id) {
  const path = "/v1/batches/" + id + "/export";
  const res = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (res.status === 401) throw new Unauthorized("the token was refused");
  if (!res.ok) throw new Error("GET " + path + ": " + res.status + " " + res.statusText);
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: "batch-" + id + ".zip", hidden: "" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ---- New batch -------------------------------------------------------------------------------

// The form never judges an input itself: the server reads the text exactly as `abridge
// enqueue` reads a file (POST /v1/batches/check) and the form shows what it found.
let newFormat = "lines"; // "csv" while the text came from a .csv file
let checked = null; // the last check of the text as it is now
let checkTimer = null;
let checkSeq = 0;

async function loadOptions() {
  const o = await api("/v1/options");
  const backend = $("new-backend");
  backend.replaceChildren(el("option", { value: "" }, "backend: default (" + o.default_backend + ")"));
  for (const b of o.backends) if (b !== o.default_backend) backend.append(el("option", { value: b }, b));
  const models = $("new-models");
  models.replaceChildren(...(o.models || []).map((m) => el("option", { value: m })));
  // An empty list: only the fleet's configured model.
  $("new-model").disabled = Array.isArray(o.models) && o.models.length === 0;
}

function scheduleCheck() {
  clearTimeout(checkTimer);
  checked = null;
  $("new-submit").disabled = true;
  checkTimer = setTimeout(checkText, 300);
}

async function checkText() {
  const text = $("new-text").value;
  const seq = ++checkSeq;
  if (!text.trim()) { newFormat = "lines"; showCheck(null, ""); return; }
  try {
    const r = await api("/v1/batches/check", "POST", { text, format: newFormat });
    if (seq === checkSeq) { checked = r; showCheck(r, ""); }
  } catch (e) {
    if (seq === checkSeq) showCheck(null, e.message);
  }
}

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

function showCheck(r, message, rejected = r ? r.rejected : []) {
  let text = message;
  if (r && !message) {
    text = plural(r.items.length, "video") + " ready";
    if (r.lists.length) text += ", " + plural(r.lists.length, "playlist or channel") + " to read";
    if (r.duplicates) text += ", " + plural(r.duplicates, "duplicate") + " dropped";
    if (rejected.length) text += ", " + plural(rejected.length, "line") + " rejected";
  }
  setText($("new-check"), text);
  $("new-rejects").replaceChildren(...rejected.map((x) =>
    el("li", { "data-line": x.line }, "line " + x.line + ": " + x.input + ": " + x.reason)));
  $("new-submit").disabled = !r || r.items.length + r.lists.length === 0;
}

async function loadFile(file) {
  if (!file) return;
  newFormat = /\.csv$/i.test(file.name) ? "csv" : "lines";
  $("new-text").value = await file.text();
  if (!$("new-name").value.trim()) $("new-name").value = file.name;
  scheduleCheck();
}

async function submitBatch() {
  const r = checked;
  if (!r || r.items.length + r.lists.length === 0) return;
  // Videos and lists in line order: the server reads each list in its line's place.
  const inputs = r.items.map((i) => ({ line: i.line, spec: { url: i.url, title: i.title, transcript: i.transcript } }))
    .concat(r.lists.map((l) => ({ line: l.line, spec: { url: l.input } })))
    .sort((a, b) => a.line - b.line);
  const body = {
    priority: $("new-priority").value,
    items: inputs.map((x) => x.spec),
  };
  const name = $("new-name").value.trim();
  if (name) body.name = name;
  const summarizer = {};
  if ($("new-backend").value) summarizer.backend = $("new-backend").value;
  if ($("new-model").value.trim()) summarizer.model = $("new-model").value.trim();
  if ($("new-length").value) summarizer.length = $("new-length").value;
  if ($("new-language").value.trim()) summarizer.language = $("new-language").value.trim();
  if (Object.keys(summarizer).length) body.summarizer = summarizer;
  $("new-submit").disabled = true;
  try {
    const created = await api("/v1/batches", "POST", body);
    // The server reads the items again; anything it refuses now is shown by its line too.
    const late = created.rejected.map((x) => ({ line: inputs[x.index].line, input: x.input, reason: x.reason }));
    const rejected = r.rejected.concat(late).sort((a, b) => a.line - b.line);
    showCheck(null, "Created batch " + shortId(created.id) + " with " + plural(created.accepted, "video") +
      (rejected.length ? "; " + plural(rejected.length, "line") + " rejected" : ""), rejected);
    $("new-text").value = "";
    $("new-name").value = "";
    $("new-file").value = "";
    newFormat = "lines";
    checked = null;
    refreshList();
  } catch (e) {
    showCheck(r, e.message);
  }
}

// ---- Search --------------------------------------------------------------------------------

let searchQuery = null; // the search shown: { q, status, cursor }
const foundById = new Map(); // found items, for their summaries

// A found item: its batch's items, and its summary.
function openFound(it) {
  select({ id: it.batch_id, name: it.batch_name });
  selectedItem = it.id;
  showSummary(it.id);
}

function searchPath(q, status, cursor) {
  let path = "/v1/items?limit=50&q=" + encodeURIComponent(q);
  if (status) path += "&status=" + status;
  if (cursor) path += "&cursor=" + cursor;
  return path;
}

async function runSearch(more = false) {
  const q = more ? searchQuery.q : $("search-text").value.trim();
  const status = more ? searchQuery.status : $("search-status").value;
  if (!q) return;
  const page = await api(searchPath(q, status, more ? searchQuery.cursor : null));
  searchQuery = { q, status, cursor: page.next_cursor };
  const tbody = $("found").tBodies[0];
  if (!more) { tbody.replaceChildren(); foundById.clear(); }
  for (const it of page.items) {
    foundById.set(it.id, it);
    tbody.append(el("tr", { class: "clickable", "data-found": it.id, onclick: () => openFound(it) },
      el("td", {}, it.batch_name || shortId(it.batch_id)),
      el("td", {}, String(it.position + 1)),
      el("td", {}, it.title || it.video_id),
      el("td", {}, el("span", { class: "status " + it.status }, it.status)),
      el("td", { class: "error" }, it.error_kind || "")));
  }
  $("found").hidden = tbody.rows.length === 0;
  $("search-more").hidden = !page.next_cursor;
  setText($("search-summary"), tbody.rows.length ? "" : "Nothing found (only finished items are searched).");
  // Bulk actions on everything the search finds, each saying how many it takes.
  const actions = [];
  if (page.failed > 0) {
    const b = confirmButton("Retry " + plural(page.failed, "failed item"), "Confirm: retry " + page.failed,
      async () => {
        const r = await api("/v1/items/retry?q=" + encodeURIComponent(q), "POST");
        setText($("search-summary"), "Requeued " + plural(r.done, "item") + (r.left ? "; " + r.left + " left" : ""));
      });
    b.dataset.action = "retry-found";
    actions.push(b);
  }
  if (page.open_batches > 0) {
    const b = confirmButton("Cancel " + plural(page.open_batches, "batch"), "Confirm: cancel " + page.open_batches,
      async () => {
        const r = await api("/v1/batches/cancel?q=" + encodeURIComponent(q), "POST");
        setText($("search-summary"), "Cancelled " + plural(r.done, "batch"));
      });
    b.dataset.action = "cancel-found";
    actions.push(b);
  }
  $("search-actions").replaceChildren(...actions);
}

// ---- Items of the selected batch -----------------------------------------------------------

function select(b) {
  selected = b;
  selectedItem = null;
  $("summary").hidden = true;
  $("detail").hidden = false;
  setText($("detail-name"), b.name || shortId(b.id));
  $("items").tBodies[0].replaceChildren();
  refresh();
}

function itemRow(it) {
  const retry = actionButton("Retry", () => api("/v1/batches/" + it.batch_id + "/retry?item=" + it.id, "POST"));
  retry.dataset.action = "retry-item";
  return el("tr", { class: "clickable item", "data-item": it.id, onclick: () => showSummary(it.id) },
    el("td"), el("td", {}, el("a", { target: "_blank", rel: "noopener noreferrer" })),
    el("td", {}, el("span")), el("td"), el("td", { class: "error" }), el("td", {}, retry));
}

let itemsById = new Map();

function updateItemRow(row, it) {
  itemsById.set(it.id, it);
  const c = row.cells;
  setText(c[0], it.position + 1);
  const a = c[1].firstChild;
  a.href = it.url;
  setText(a, it.title || it.video_id);
  statusBadge(c[2].firstChild, it.status);
  setText(c[3], it.attempts);
  setText(c[4], it.error_kind ? it.error_kind + ": " + (it.error_message || "") : "");
  c[5].firstChild.hidden = it.status !== "failed";
  row.classList.toggle("selected", selectedItem === it.id);
}

function showSummary(id) {
  selectedItem = id;
  const it = itemsById.get(id) || foundById.get(id);
  if (!it) return;
  $("summary").hidden = false;
  setText($("summary-title"), (it.title || it.video_id) + " — " + it.status);
  const text = it.summary || (it.error_message ? it.error_kind + ": " + it.error_message : "No summary yet.");
  // Redraw only when the text changed, so a refresh does not reset a reader's selection.
  if ($("summary-text").dataset.shown !== text) {
    $("summary-text").replaceChildren(markdown(text, it.video_id));
    $("summary-text").dataset.shown = text;
  }
}

// ---- Summaries as formatted text -------------------------------------------------------------

// The summary's markdown (the shape abridge renders: headings, paragraphs, `- ` lists, **bold**,
// timestamps) as DOM nodes. Every piece of text is a text node, never HTML: titles, transcripts
// and model answers are anyone's words. The only links made are timestamps into this item's
// own video: `[01:23](https://youtu.be/ID?t=83)` with the item's id, or a bare `[01:23]`.
// Any other link stays text.
function markdown(text, videoId) {
  const out = document.createDocumentFragment();
  let list = null;
  let para = [];
  const flush = () => {
    if (para.length) out.append(el("p", {}, ...inline(para.join(" "), videoId)));
    para = [];
  };
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    const heading = /^(#{1,3}) (.*)$/.exec(line);
    const item = /^[-*] (.*)$/.exec(line);
    if (heading) {
      flush(); list = null;
      out.append(el("h" + (heading[1].length + 3), {}, ...inline(heading[2], videoId)));
    } else if (item) {
      flush();
      if (!list) { list = el("ul"); out.append(list); }
      list.append(el("li", {}, ...inline(item[1], videoId)));
    } else if (line.trim() === "") {
      flush(); list = null;
    } else {
      list = null;
      para.push(line.trim());
    }
  }
  flush();
  return out;
}

// One line's `**bold**` and timestamps as nodes.
function inline(text, videoId) {
  const nodes = [];
  const pattern = /\*\*(.+?)\*\*|\[((?:\d{1,2}:)?\d{1,2}:\d{2})\](?:\(([^)\s]*)\))?/g;
  let at = 0;
  for (let m; (m = pattern.exec(text)) !== null; ) {
    if (m.index > at) nodes.push(document.createTextNode(text.slice(at, m.index)));
    at = pattern.lastIndex;
    if (m[1] !== undefined) { nodes.push(el("strong", {}, m[1])); continue; }
    const seconds = m[2].split(":").reduce((acc, part) => acc * 60 + Number(part), 0);
    const own = "https://youtu.be/" + videoId + "?t=" + seconds;
    if (m[3] === undefined || m[3] === own) {
      nodes.push(el("a", { href: "https://www.youtube.com/watch?v=" + encodeURIComponent(videoId) + "&t=" + seconds + "s",
        target: "_blank", rel: "noopener noreferrer", class: "stamp" }, m[2]));
    } else {
      nodes.push(document.createTextNode(m[0]));
    }
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

async function refreshItems() {
  if (!selected) return;
  const filter = $("detail-filter").value;
  const q = "?limit=" + ITEM_PAGE + (filter ? "&status=" + filter : "");
  const page = await api("/v1/batches/" + selected.id + "/items" + q);
  itemsById = new Map();
  reconcile($("items").tBodies[0], page.items, (it) => it.id, itemRow, updateItemRow);
  $("items-more").hidden = !page.next_cursor;
  if (selectedItem !== null) showSummary(selectedItem);
}

// ---- Failed items --------------------------------------------------------------------------

function renderFailed(list, batchNames) {
  $("failed-empty").hidden = list.items.length > 0;
  reconcile($("failed").tBodies[0], list.items, (it) => it.id,
    (it) => {
      const retry = actionButton("Retry", () => api("/v1/batches/" + it.batch_id + "/retry?item=" + it.id, "POST"));
      retry.dataset.action = "retry-item";
      return el("tr", { "data-item": it.id }, el("td"), el("td", {}, el("a", { target: "_blank", rel: "noopener noreferrer" })),
        el("td"), el("td", { class: "error" }), el("td"), el("td", {}, retry));
    },
    (row, it) => {
      const c = row.cells;
      setText(c[0], batchNames.get(it.batch_id) || shortId(it.batch_id));
      c[1].firstChild.href = it.url;
      setText(c[1].firstChild, it.title || it.video_id);
      setText(c[2], it.attempts);
      setText(c[3], (it.error_kind || "") + ": " + (it.error_message || ""));
      setText(c[4], ago(it.finished_at));
    });
}

// ---- Chart ---------------------------------------------------------------------------------

function renderHistory(h) {
  const svg = $("chart");
  const W = 720, H = 160, pad = 6;
  const mins = h.minutes.slice(-60);
  const slot = W / 60;
  const offset = 60 - mins.length;
  const maxDone = Math.max(1, ...mins.map((m) => m.succeeded + m.failed));
  const maxDepth = Math.max(1, ...mins.map((m) => m.ready || 0));
  const ns = "http://www.w3.org/2000/svg";
  const nodes = [];
  mins.forEach((m, i) => {
    const x = (offset + i) * slot + 1;
    const hd = (H - pad) * m.succeeded / maxDone;
    const hf = (H - pad) * m.failed / maxDone;
    for (const [cls, y, hh, n] of [["done", H - hd, hd, m.succeeded], ["fail", H - hd - hf, hf, m.failed]]) {
      if (hh <= 0) continue;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("class", cls);
      r.setAttribute("x", x); r.setAttribute("y", y);
      r.setAttribute("width", slot - 2); r.setAttribute("height", hh);
      const t = document.createElementNS(ns, "title");
      t.textContent = new Date(m.minute).toLocaleTimeString() + ": " + n + (cls === "done" ? " succeeded" : " failed");
      r.append(t);
      nodes.push(r);
    }
  });
  // Depth as steps: one level per sampled minute, so even a single minute shows.
  const points = [];
  mins.forEach((m, i) => {
    if (m.ready === null) return;
    const y = H - pad - (H - 2 * pad) * m.ready / maxDepth;
    points.push([(offset + i) * slot, y], [(offset + i + 1) * slot, y]);
  });
  if (points.length) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", "depth");
    line.setAttribute("points", points.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
    const t = document.createElementNS(ns, "title");
    const last = mins.filter((m) => m.ready !== null).pop();
    t.textContent = "queue depth (largest sample per minute), now " + last.ready;
    line.append(t);
    nodes.push(line);
  }
  svg.replaceChildren(...nodes);
  svg.dataset.maxDepth = maxDepth;
  svg.dataset.maxFinished = maxDone;
  const last = mins.length > 1 ? mins[mins.length - 2] : mins[mins.length - 1];
  if (last) setText($("t-rate"), last.succeeded + last.failed);
}

// ---- The loop ------------------------------------------------------------------------------

// One refresh at a time: a refresh asked for while one runs (a button's, say) runs right after
// it, so clicks never start a second polling loop.
let refreshing = false;
let refreshAgain = false;

async function refresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  clearTimeout(timer);
  const usedToken = token;
  let signedOut = false;
  try {
    const wantHistory = Date.now() - lastHistory >= HISTORY_MS;
    const wantList = !listPage || Date.now() - lastList >= LIST_MS;
    const [stats, page, failed, history] = await Promise.all([
      api("/v1/stats"),
      wantList
        ? api("/v1/batches?limit=25" + ($("tenant-filter").value ? "&tenant=" + encodeURIComponent($("tenant-filter").value) : ""))
        : Promise.resolve(null),
      api("/v1/failed?limit=20"),
      wantHistory ? api("/v1/history?minutes=60") : Promise.resolve(null),
    ]);
    renderStats(stats);
    if (page) { listPage = page; lastList = Date.now(); renderBatches(page); followOpen(page); }
    renderFailed(failed, new Map(listPage.batches.map((b) => [b.id, b.name || shortId(b.id)])));
    if (history) { renderHistory(history); lastHistory = Date.now(); }
    await refreshItems();
    const c = $("connection");
    c.className = "pill live";
    setText(c, "live");
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    if (e instanceof Unauthorized) {
      // Only if the refused token is still the one in use (not one replaced meanwhile).
      if (token === usedToken) {
        signOut("That token was refused (revoked, or for another server).");
        signedOut = true;
      }
    } else {
      const c = $("connection");
      c.className = "pill down";
      setText(c, "unreachable");
      showError(e.message);
    }
  } finally {
    refreshing = false;
  }
  if (signedOut || !token) { refreshAgain = false; return; }
  if (refreshAgain) { refreshAgain = false; refresh(); return; }
  timer = setTimeout(refresh, REFRESH_MS);
}

function signOut(why) {
  clearTimeout(timer);
  stopStreams();
  listPage = null;
  token = "";
  localStorage.removeItem(TOKEN_KEY);
  $("main").hidden = true;
  $("signout").hidden = true;
  $("pause").hidden = true;
  $("paused").hidden = true;
  tenantsListed = false;
  $("signin").hidden = false;
  setText($("signin-error"), why || "");
}

function start() {
  $("signin").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = false;
  lastHistory = 0;
  loadOptions().catch((e) => showError(e.message));
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    localStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("new-text").addEventListener("input", scheduleCheck);
  $("new-file").addEventListener("change", () => loadFile($("new-file").files[0]));
  $("new-text").addEventListener("dragover", (ev) => { ev.preventDefault(); $("new-text").classList.add("dropping"); });
  $("new-text").addEventListener("dragleave", () => $("new-text").classList.remove("dropping"));
  $("new-text").addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("new-text").classList.remove("dropping");
    loadFile(ev.dataTransfer.files[0]);
  });
  $("new-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitBatch(); });
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runSearch().catch((e) => showError(e.message));
  });
  $("search-more").addEventListener("click", () => runSearch(true).catch((e) => showError(e.message)));
  $("tenant-filter").addEventListener("change", () => { $("batches").tBodies[0].replaceChildren(); refreshList(); });
  $("pause").addEventListener("click", async () => {
    const b = $("pause");
    b.disabled = true;
    try {
      await api(b.dataset.paused ? "/v1/queue/resume" : "/v1/queue/pause", "POST");
      showError("");
    } catch (e) { showError(e.message); }
    b.disabled = false;
    refresh();
  });
  $("detail-close").addEventListener("click", () => { selected = null; $("detail").hidden = true; refresh(); });
  $("detail-filter").addEventListener("change", () => { $("items").tBodies[0].replaceChildren(); refresh(); });
  takeTokenFromFragment();
  // A sign-in URL opened in a tab that already shows the page changes only the fragment.
  window.addEventListener("hashchange", () => { if (takeTokenFromFragment()) start(); });
  if (token) start(); else signOut("");
});

// `abridge up` prints a URL with the token in the fragment (`#token=...`), which the browser
// never sends to the server: take it, keep it like a pasted one, and clear the address bar.
function takeTokenFromFragment() {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!given) return false;
  history.replaceState(null, "", location.pathname + location.search);
  const next = given.trim();
  if (!next || next === token) return false;
  // A link must not swap the identity this browser uses without asking: batches pasted
  // afterwards would go to whoever made the link.
  if (token && !confirm("This link signs in with another token. Use it instead of the one this browser holds?")) {
    return false;
  }
  clearTimeout(timer);
  stopStreams();
  listPage = null;
  tenantsListed = false;
  $("batches").tBodies[0].replaceChildren();
  $("found").tBodies[0].replaceChildren();
  token = next;
  localStorage.setItem(TOKEN_KEY, token);
  return true;
}
