// The operator console: polls /console/api/state, /console/api/requests and
// /console/api/audit once a second
// while the page is open; every value is written with textContent (never as HTML).
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("llm-edge-admin-key") || "";

function authHeaders(extra) {
  // the console's own header: no form and no other site's page can send it
  const h = Object.assign({ "X-Llm-Console": "1" }, extra || {});
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(path, body) {
  const init = { headers: authHeaders(body ? { "content-type": "application/json" } : {}) };
  if (body !== undefined) { init.method = "POST"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  if (response.status === 401 || response.status === 403) {
    $("auth").hidden = false;
    const err = await response.json().catch(() => ({}));
    $("auth-message").textContent = (err.error && err.error.message) || "not allowed";
    throw new Error("unauthorized");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((data.error && data.error.message) || "HTTP " + response.status);
  }
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, name, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-label", label + " " + name);
  b.addEventListener("click", onClick);
  return b;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return null;
  return (seconds < 0.1 ? (seconds * 1000).toFixed(1) : Math.round(seconds * 1000)) + " ms";
}
function bytes(n) {
  if (n === null || n === undefined) return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
function duration(s) {
  if (s === null || s === undefined) return null;
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function pct(x) { return x === null || x === undefined ? null : (100 * x).toFixed(1) + " %"; }
function usd(x) { return x === null || x === undefined ? null : "$" + Number(x).toFixed(4); }

function fill(id, rows, render) {
  const body = $(id);
  const fresh = document.createDocumentFragment();
  for (const r of rows) { const tr = document.createElement("tr"); render(tr, r); fresh.appendChild(tr); }
  body.replaceChildren(fresh);
}

function confirmAction(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
    $("confirm-no").focus();
  });
}

async function act(promise, done) {
  try { const result = await promise; $("message").textContent = ""; if (done) done(result); poll(); }
  catch (e) { if (e.message !== "unauthorized") $("message").textContent = e.message; }
}

function renderServices(services) {
  fill("services-body", services, (tr, s) => {
    tr.dataset.role = s.role; tr.dataset.state = s.state; tr.dataset.id = s.id;
    cell(tr, s.role); cell(tr, s.state, "state-" + s.state); cell(tr, s.host); cell(tr, s.pid);
    cell(tr, s.version); cell(tr, duration(s.uptime_s), "num"); cell(tr, s.in_flight, "num");
    cell(tr, s.rate === null ? null : s.rate + (s.rate_of === "messages" ? " msg" : " req"), "num");
    cell(tr, s.errors, "num");
  });
}

function breaker(action, deployment) {
  return () => act(api("/console/api/breaker", { action, deployment }), (r) => {
    $("notice").textContent = action + " " + deployment + " on " + r.brokers + " brokers";
  });
}

function renderDeployments(deployments) {
  fill("deployments-body", deployments, (tr, d) => {
    tr.dataset.deployment = d.deployment; tr.dataset.state = d.state;
    cell(tr, d.deployment); cell(tr, d.provider);
    const counts = Object.entries(d.brokers).map(([s, n]) => n + " " + s).join(", ");
    cell(tr, d.state + (d.forced ? " (forced)" : "") + " — " + counts, "state-" + d.state);
    cell(tr, d.state === "open" ? duration(Math.round(d.retry_after)) : null, "num");
    cell(tr, ms(d.p50_s), "num p50"); cell(tr, ms(d.p99_s), "num p99");
    cell(tr, d.answered ? pct(d.error_rate) + " of " + d.answered : null, "num errors");
    cell(tr, d.rate.toFixed(1), "num rate");
    cell(tr, d.in_flight + " (" + d.mean_in_flight.toFixed(1) + ")", "num in-flight");
    const actions = cell(tr, "");
    actions.textContent = "";
    actions.append(
      button("Force open", d.deployment, breaker("open", d.deployment)),
      button("Force close", d.deployment, breaker("close", d.deployment)),
      button("Reset", d.deployment, breaker("reset", d.deployment)),
    );
  });
}

function renderAdmission(admission) {
  const queues = admission ? admission.queues : [];
  fill("queues-body", queues, (tr, q) => {
    tr.dataset.tenant = q.tenant; tr.dataset.class = q.class;
    cell(tr, q.class); cell(tr, q.tenant); cell(tr, q.waiting, "num waiting");
    cell(tr, Object.entries(q.where).map(([g, n]) => g + ": " + n).join(", ") || null);
    cell(tr, q.waited, "num waited");
    cell(tr, ms(q.p50_s), "num p50"); cell(tr, ms(q.p99_s), "num p99");
    cell(tr, q.refused, "num refused");
  });
  const shares = admission ? admission.shares : [];
  fill("shares-body", shares, (tr, s) => {
    tr.dataset.deployment = s.deployment; tr.dataset.pool = s.pool;
    cell(tr, s.deployment); cell(tr, s.pool || null); cell(tr, s.limit, "num limit");
    cell(tr, s.held, "num held"); cell(tr, s.brokers, "num");
    cell(tr, s.paused_s > 0 ? duration(Math.ceil(s.paused_s)) : null, "num paused");
  });
}

function renderCache(cache) {
  const dl = $("cache-stats");
  const svg = $("cache-chart");
  if (!cache) { dl.replaceChildren(); svg.replaceChildren(); return; }
  const items = [
    ["L1 hit ratio", pct(cache.l1_ratio), "l1-ratio"], ["L1 hits", cache.l1_hits, "l1-hits"],
    ["L2 hit ratio", cache.l2 ? pct(cache.l2_ratio) : "off", "l2-ratio"],
    ["L2 hits", cache.l2_hits, "l2-hits"], ["Coalesced", cache.coalesced, "coalesced"],
    ["L1 entries", cache.l1_entries, "l1-entries"], ["L1 bytes", bytes(cache.l1_bytes), "l1-bytes"],
    ["L2 entries", cache.l2 ? cache.l2_entries : "off", "l2-entries"],
    ["L2 bytes", cache.l2 ? bytes(cache.l2_bytes) : "off", "l2-bytes"],
    ["Saved by hits", usd(cache.saved_usd), "saved"],
  ];
  if (cache.l2_scope === "database") {
    items.push(["L2 counted", "the whole Redis database", "l2-scope"]);
  }
  const fragment = document.createDocumentFragment();
  for (const [label, value, id] of items) {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.id = id;
    dd.textContent = value === null || value === undefined ? "—" : String(value);
    fragment.append(dt, dd);
  }
  dl.replaceChildren(fragment);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  [["L1", cache.l1_ratio], ["L2", cache.l2_ratio]].forEach(([tier, ratio], i) => {
    const y = 8 + i * 26;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 0); label.setAttribute("y", y + 13); label.textContent = tier;
    const back = document.createElementNS(ns, "rect");
    back.setAttribute("x", 28); back.setAttribute("y", y); back.setAttribute("width", 280);
    back.setAttribute("height", 18); back.setAttribute("fill", "#eaeef2");
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", 28); bar.setAttribute("y", y); bar.setAttribute("height", 18);
    bar.setAttribute("width", Math.round(280 * (ratio || 0))); bar.setAttribute("fill", "#2da44e");
    svg.append(label, back, bar);
  });
}

// "name $x, name $y" in name order: a tenant's spend by model, or by the service tier that
// served it (default, flex, priority, batch ...)
function shares(byName) {
  return Object.entries(byName || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([name, cost]) => name + " " + usd(cost)).join(", ") || null;
}

function renderSpend(spend) {
  const rows = (spend && spend.tenants) || [];
  fill("spend-body", rows, (tr, s) => {
    tr.dataset.tenant = s.tenant;
    cell(tr, s.tenant); cell(tr, s.period); cell(tr, usd(s.spent_usd), "num");
    cell(tr, s.budget_usd === null ? "none" : usd(s.budget_usd) +
      " (" + Math.round(100 * s.spent_usd / Math.max(s.budget_usd, 1e-9)) + " %)", "num");
    cell(tr, shares(s.by_model), "by-model");
    cell(tr, shares(s.by_tier), "by-tier");
    cell(tr, "rpm " + s.rpm_used + " of " + (s.rpm || "∞") +
      " · tpm " + s.tpm_used + " of " + (s.tpm || "∞"));
  });
}

async function download(fileId) {
  const response = await fetch("/console/api/files/" + encodeURIComponent(fileId),
    { headers: authHeaders() });
  if (!response.ok) { $("message").textContent = "download failed: HTTP " + response.status; return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = fileId + ".jsonl";
  link.click();
  URL.revokeObjectURL(link.href);
}

function renderBatches(batches) {
  if (batches === null) { fill("batches-body", [], () => {}); return; }
  fill("batches-body", batches, (tr, b) => {
    tr.dataset.batch = b.id; tr.dataset.status = b.status;
    cell(tr, b.id); cell(tr, b.tenant); cell(tr, b.status);
    const p = cell(tr, "");
    p.textContent = "";
    const bar = document.createElement("progress");
    bar.max = Math.max(b.total, 1); bar.value = b.completed + b.failed;
    bar.setAttribute("aria-label", "progress of " + b.id);
    const label = document.createElement("span");
    label.className = "percent"; label.textContent = " " + b.percent + " %";
    p.append(bar, label);
    cell(tr, b.completed + " / " + b.failed + " / " + b.total, "num counts");
    cell(tr, b.rate === null ? null : b.rate + " /s", "num");
    cell(tr, duration(b.eta_s), "num");
    cell(tr, b.offload || "normal path", "offload");
    const actions = cell(tr, ""); actions.textContent = "";
    if (["validating", "in_progress", "finalizing"].includes(b.status)) {
      const cancel = () => act(api("/console/api/batches/" + b.id + "/cancel", {}), () => {
        $("notice").textContent = "cancelling " + b.id;
      });
      actions.append(button("Cancel", b.id, cancel));
    }
    if (b.output_file_id) actions.append(button("Output", b.id, () => download(b.output_file_id)));
    if (b.error_file_id) actions.append(button("Errors", b.id, () => download(b.error_file_id)));
  });
}

function limitsText(x) {
  // a tenant's or a key's own limits, "—" parts left out
  const parts = [];
  if (x.rpm) parts.push("rpm " + x.rpm);
  if (x.tpm) parts.push("tpm " + x.tpm);
  if (x.budget_usd !== undefined && x.budget_usd !== null) {
    parts.push(usd(x.budget_usd) + (x.budget_period ? "/" + x.budget_period : ""));
  }
  if (x.priority) parts.push("priority " + x.priority);
  return parts.join(" · ");
}

function grantFields(prefix) {
  // the model list and limits of the create or edit form; empty fields are left unset
  const models = $(prefix + "-models").value.split(/[\s,]+/).filter((m) => m);
  const number = (id) => { const v = $(prefix + "-" + id).value.trim(); return v === "" ? null : Number(v); };
  return {
    models, rpm: number("rpm"), tpm: number("tpm"), budget_usd: number("budget"),
    budget_period: $(prefix + "-period").value || null,
    priority: $(prefix + "-priority").value || null,
  };
}

let editing = null;
function startEdit(k) {
  editing = k.hash;
  $("edit-hash").textContent = k.hash.slice(0, 19) + "…";
  $("edit-models").value = (k.models || []).join(", ");
  $("edit-rpm").value = k.rpm || ""; $("edit-tpm").value = k.tpm || "";
  $("edit-budget").value = k.budget_usd === undefined ? "" : k.budget_usd;
  $("edit-period").value = k.budget_period || "";
  $("edit-priority").value = k.priority || "";
  $("key-edit").hidden = false;
  $("edit-models").focus();
}

function renderKey(t, k) {
  const item = document.createElement("li");
  item.className = "key"; item.dataset.key = k.hash; item.dataset.source = k.source;
  const own = [k.models && k.models.length ? "models " + k.models.join(", ") : "", limitsText(k)]
    .filter((x) => x).join(" · ");
  const label = document.createElement("span");
  label.className = "grant";
  label.textContent = k.hash.slice(0, 19) + "… (" + k.source + ") " + (own || "tenant's limits") + " ";
  item.append(label);
  if (k.source !== "run-time") return item;
  const edit = button("Edit", k.hash.slice(0, 19), () => startEdit(k));
  edit.dataset.edit = k.hash;
  const revoke = button("Revoke", k.hash.slice(0, 19), async () => {
    if (await confirmAction("Revoke this key of " + t.name + "? Requests with it fail at once.")) {
      act(api("/console/api/keys/revoke", { hash: k.hash }), () => {
        $("notice").textContent = "revoked a key of " + t.name;
      });
    }
  });
  revoke.dataset.hash = k.hash;
  item.append(edit, revoke);
  return item;
}

function renderTenants(tenants) {
  const rows = (tenants && tenants.tenants) || [];
  fill("tenants-body", rows, (tr, t) => {
    tr.dataset.tenant = t.name;
    cell(tr, t.name); cell(tr, t.admin ? "yes" : "no");
    cell(tr, t.models && t.models.length ? t.models.join(", ") : "all");
    cell(tr, (t.rpm || "∞") + " / " + (t.tpm || "∞"));
    cell(tr, t.budget_usd === null ? "none" : usd(t.budget_usd) + "/" + t.budget_period);
    const keys = cell(tr, ""); keys.textContent = t.keys.length ? "" : "none";
    if (t.keys.length) {
      const list = document.createElement("ul");
      for (const k of t.keys) list.append(renderKey(t, k));
      keys.append(list);
    }
  });
}

function renderRequests(requests) {
  fill("requests-body", requests, (tr, r) => {
    tr.dataset.status = r.status; tr.dataset.cache = r.cache;
    cell(tr, new Date(r.time * 1000).toLocaleTimeString()); cell(tr, r.request_id);
    cell(tr, r.tenant); cell(tr, r.model); cell(tr, r.status); cell(tr, r.cache);
    cell(tr, r.deployment || null);
    const tokens = r.prompt_tokens === undefined ? null : r.prompt_tokens + " + " + r.completion_tokens;
    cell(tr, tokens, "num"); cell(tr, r.ms, "num");
  });
}

function renderAudit(audit) {
  const status = $("audit-chain");
  const chain = audit && audit.chain;
  if (!audit || !audit.available || !chain) {
    status.dataset.intact = "unknown";
    status.className = "";
    status.textContent = "no audit trail (audit off, or JetStream unavailable)";
  } else if (chain.intact && !chain.complete) {
    status.dataset.intact = "checking";
    status.className = "";
    status.textContent = "checking the chain: seq " + chain.checked_seq + " of " + chain.last_seq;
  } else if (chain.intact) {
    status.dataset.intact = "yes";
    status.className = "state-closed";
    status.textContent = "chain intact: " + chain.records + " records, seq " +
      chain.first_seq + " to " + chain.last_seq;
  } else {
    status.dataset.intact = "no";
    status.className = "state-open";
    status.textContent = "chain BROKEN at " + chain.break;
  }
  fill("audit-body", (audit && audit.records) || [], (tr, r) => {
    tr.dataset.seq = r.seq; tr.dataset.action = r.action || ""; tr.dataset.outcome = r.outcome || "";
    cell(tr, r.seq, "num");
    cell(tr, r.time ? new Date(r.time).toLocaleString() : null);
    cell(tr, r.action); cell(tr, r.outcome);
    const actor = r.actor || {};
    const key = actor.key ? " " + actor.key.replace("sha256:", "").slice(0, 12) : "";
    cell(tr, (actor.tenant || actor.role || "") + key, "actor");
    const origin = r.origin || {};
    cell(tr, [origin.via, origin.peer].filter(Boolean).join(" "));
    const params = r.params && Object.keys(r.params).length ? JSON.stringify(r.params) : "";
    cell(tr, params + (r.detail ? " (" + r.detail + ")" : ""));
  });
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    const params = new URLSearchParams();
    for (const name of ["tenant", "model", "status", "cache"]) {
      const value = $("f-" + name).value.trim();
      if (value) params.set(name, value);
    }
    const [state, recent, audit] = await Promise.all([
      api("/console/api/state"), api("/console/api/requests?" + params.toString()),
      api("/console/api/audit"),
    ]);
    $("auth").hidden = true;
    renderServices(state.services); renderDeployments(state.deployments);
    renderAdmission(state.admission); renderCache(state.cache); renderSpend(state.spend); renderBatches(state.batches);
    renderTenants(state.tenants); renderRequests(recent.requests); renderAudit(audit);
    $("updated").textContent = "updated " + new Date(state.time * 1000).toLocaleTimeString();
  } catch (e) {
    if (e.message !== "unauthorized") $("updated").textContent = "not updated: " + e.message;
  } finally {
    polling = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("admin-key").value.trim();
    sessionStorage.setItem("llm-edge-admin-key", key);
    $("auth-message").textContent = "";
    poll();
  });
  $("purge-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const namespace = $("purge-namespace").value.trim();
    const tenant = $("purge-tenant").value.trim() || "default";
    if (!namespace) { $("message").textContent = "name a namespace to purge"; return; }
    if (await confirmAction("Purge namespace " + namespace + " of " + tenant + " from L1 and L2?")) {
      act(api("/console/api/purge", { namespace, tenant }), (r) => {
        $("notice").textContent = "purged " + namespace + " of " + tenant + " on " + r.brokers + " brokers";
      });
    }
  });
  $("purge-all").addEventListener("click", async () => {
    if (await confirmAction("Purge EVERY cache entry of every tenant?")) {
      act(api("/console/api/purge", { all: true }), (r) => {
        $("notice").textContent = "purged everything on " + r.brokers + " brokers";
      });
    }
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const command = Object.assign({ tenant: $("key-tenant").value.trim() }, grantFields("key"));
    act(api("/console/api/keys", command), (r) => {
      $("new-key").textContent = r.key;
    });
  });
  $("key-edit").addEventListener("submit", (event) => {
    event.preventDefault();
    const hash = editing;
    act(api("/console/api/keys/update", Object.assign({ hash }, grantFields("edit"))), () => {
      $("notice").textContent = "saved key " + hash.slice(0, 19) + "…";
      $("key-edit").hidden = true; editing = null;
    });
  });
  $("cancel-edit").addEventListener("click", () => { $("key-edit").hidden = true; editing = null; });
  $("filters").addEventListener("input", () => poll());
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  poll();
  setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
});
