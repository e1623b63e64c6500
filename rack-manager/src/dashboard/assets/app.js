// The Mast dashboard: reads and acts through the manager's /v1 API with the session cookie;
// every change carries the session's CSRF token in a header. No libraries, no other origins.
"use strict";

const $ = (id) => document.getElementById(id);
const csrf = document.querySelector('meta[name="mast-csrf"]').content;
const scope = document.querySelector('meta[name="mast-scope"]').content;
const canDeploy = scope === "deploy" || scope === "admin";
const isAdmin = scope === "admin";
const PAGE = 50;
const view = { instances: 0, hosts: 0 };
let data = { hosts: [], instances: [], stats: { instances: [] }, power: null };
const history = new Map(); // instance id -> { cpu: [], rss: [] }
let consoleOf = null;

if (!canDeploy) {
  for (const el of document.querySelectorAll(".act")) el.remove();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(method, path, body) {
  const headers = { "X-Mast-Csrf": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.href = "/";
    throw new Error("signed out");
  }
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const e = (value && value.error) || {};
    throw new Error((e.message || response.statusText) + (e.hint ? " (" + e.hint + ")" : ""));
  }
  return value;
}

function say(text, bad) {
  const status = $("status");
  status.textContent = text;
  status.className = bad ? "bad" : "";
}

function confirmThen(text, action) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return say("cancelled");
    try {
      await action();
      await refresh();
    } catch (e) {
      say(e.message, true);
    }
  };
  dialog.showModal();
}

function ago(ms) {
  const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function spark(values, max) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 60 16");
  svg.setAttribute("class", "spark");
  if (values.length > 1) {
    const top = Math.max(max || 0, ...values) || 1;
    const points = values.map((v, i) => `${(i * 60) / (values.length - 1)},${16 - (v / top) * 15}`).join(" ");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points);
    svg.append(line);
  }
  return svg;
}

function address(instance) {
  const p = instance.ports && instance.ports[0];
  if (!p) return "";
  const host = p.address || "127.0.0.1";
  const port = p.address ? p.guest_port : p.host_port;
  return `${host}:${port}`;
}

function page(kind, total) {
  const pages = Math.max(1, Math.ceil(total / PAGE));
  view[kind] = Math.min(Math.max(0, view[kind]), pages - 1);
  const from = view[kind] * PAGE;
  return [from, Math.min(total, from + PAGE), `${total ? from + 1 : 0}–${Math.min(total, from + PAGE)} of ${total}`];
}

function renderOverview() {
  const count = (s) => data.instances.filter((i) => i.state === s).length;
  $("ov-hosts").textContent = data.hosts.length;
  $("ov-running").textContent = count("running");
  $("ov-instances").textContent = data.instances.length;
  $("ov-failed").textContent = count("failed");
  const mem = data.hosts.reduce((a, h) => a + h.memory_mib, 0);
  const used = data.hosts.reduce((a, h) => a + h.memory_used_mib, 0);
  $("ov-memory").textContent = `${used} / ${mem} MiB`;
  if (data.power) {
    const b = data.power.budget_w == null ? "" : ` / ${data.power.budget_w.toFixed(0)}`;
    $("ov-watts").textContent = data.power.watts.toFixed(1) + b;
  }
}

function renderHosts() {
  const filter = $("host-filter").value.trim();
  const hosts = data.hosts.filter((h) => !filter || h.name.includes(filter));
  const [from, to, label] = page("hosts", hosts.length);
  $("host-page").textContent = label;
  const power = new Map(((data.power && data.power.hosts) || []).map((p) => [p.host, p]));
  const rows = hosts.slice(from, to).map((h) => {
    const p = power.get(h.name);
    const meter = (value, max, title) => {
      const m = el("meter", { min: "0", max: String(max || 1), value: String(value), title });
      return m;
    };
    const cells = [
      el("td", { text: h.name }),
      el("td", { text: h.state, class: "state " + h.state }),
      el("td", { text: String(h.instances) }),
      el("td", {}, meter(h.memory_used_mib, h.memory_mib, `${h.memory_used_mib} of ${h.memory_mib} MiB`), ` ${h.memory_used_mib}/${h.memory_mib}`),
      el("td", { text: p ? p.busy_cores.toFixed(2) + " cores" : "" }),
      el("td", {}, p ? meter(p.watts, p.model.budget_w || p.worst_case_w || p.watts, "watts") : "", p ? ` ${p.watts.toFixed(1)} W` : ""),
    ];
    if (isAdmin) {
      const drain = el("button", { type: "button", "data-act": "drain", "data-host": h.name, text: "drain" });
      cells.push(el("td", { class: "act" }, drain));
    } else if (canDeploy) {
      cells.push(el("td", { class: "act" }));
    }
    return el("tr", { "data-host": h.name }, ...cells);
  });
  $("hosts").replaceChildren(...rows);
}

function renderInstances() {
  const text = $("f-text").value.trim();
  const host = $("f-host").value.trim();
  const state = $("f-state").value;
  const list = data.instances.filter(
    (i) =>
      (!text || i.id.includes(text) || i.deployment === text || i.image_name.includes(text)) &&
      (!host || i.host.includes(host)) &&
      (!state || i.state === state),
  );
  const [from, to, label] = page("instances", list.length);
  $("inst-page").textContent = label;
  const rows = list.slice(from, to).map((i) => {
    const h = history.get(i.id) || { cpu: [], rss: [] };
    const addr = address(i);
    const link = addr ? el("a", { href: "http://" + addr + "/", rel: "noreferrer", target: "_blank", text: addr }) : "";
    const cells = [
      el("td", {}, el("a", { href: "#console", "data-console": i.id, text: i.id })),
      el("td", { text: `${i.deployment} (${i.image_name})` }),
      el("td", { text: i.host }),
      el("td", { text: i.state, class: "state " + i.state }),
      el("td", { text: String(i.restarts) }),
      el("td", { text: i.state === "running" && i.started_ms ? ago(i.started_ms) : "" }),
      el("td", {}, link),
      el("td", { title: h.cpu.length ? h.cpu[h.cpu.length - 1].toFixed(1) + "%" : "" }, spark(h.cpu, 100)),
      el("td", { title: h.rss.length ? (h.rss[h.rss.length - 1] / 1048576).toFixed(1) + " MiB" : "" }, spark(h.rss)),
    ];
    if (canDeploy) {
      const actions = i.desired === "running" && i.state !== "stopped" ? ["stop", "restart", "rm"] : ["start", "rm"];
      const buttons = actions.map((a) => el("button", { type: "button", "data-act": a, "data-id": i.id, text: a }));
      cells.push(el("td", { class: "act" }, ...buttons));
    }
    return el("tr", { "data-id": i.id }, ...cells);
  });
  $("instance-rows").replaceChildren(...rows);
  const byDeployment = new Map();
  for (const i of data.instances) {
    const d = byDeployment.get(i.deployment) || { image: i.image_name, running: 0, total: 0 };
    d.total += 1;
    if (i.state === "running") d.running += 1;
    byDeployment.set(i.deployment, d);
  }
  const energy = new Map(((data.power && data.power.deployments) || []).map((d) => [d.deployment, d]));
  const items = [...byDeployment.entries()].slice(0, 200).map(([id, d]) => {
    const e = energy.get(id);
    const wh = e ? ` · ${e.wh.toFixed(4)} Wh` : "";
    const pick = el("a", { href: "#instances", "data-deployment": id, text: id });
    return el("li", {}, pick, ` ${d.image}: ${d.running}/${d.total} running${wh}`);
  });
  $("deployments").replaceChildren(el("h3", { text: "Deployments" }), el("ul", { class: "deployments" }, ...items));
}

function record() {
  for (const s of data.stats.instances || []) {
    const h = history.get(s.id) || { cpu: [], rss: [] };
    if (s.cpu_percent != null) h.cpu.push(s.cpu_percent);
    if (s.rss_bytes != null) h.rss.push(s.rss_bytes);
    h.cpu = h.cpu.slice(-30);
    h.rss = h.rss.slice(-30);
    history.set(s.id, h);
  }
}

async function refresh() {
  try {
    const [hosts, instances, stats] = await Promise.all([
      api("GET", "/v1/hosts"),
      api("GET", "/v1/instances?all=true"),
      api("GET", "/v1/stats"),
    ]);
    data = { hosts, instances, stats, power: stats.power || null };
    record();
    renderOverview();
    renderHosts();
    renderInstances();
    document.body.dataset.loaded = "yes";
  } catch (e) {
    say(e.message, true);
  }
}

async function refreshReplication() {
  const body = $("replication-body");
  const parts = [];
  try {
    const r = await api("GET", "/v1/replication");
    const rows = [...r.images.map((i) => ["image", `${i.name} ${i.version}`, i.behind_bytes, i.lag_ms]), ...r.volumes.map((v) => ["volume", v.name, v.behind_bytes, v.lag_ms])];
    parts.push(el("p", { text: "remotes: " + (r.remotes.length ? r.remotes.join(", ") : "none") }));
    const table = el("table", {}, el("tr", {}, ...["kind", "name", "behind", "lag"].map((t) => el("th", { text: t }))));
    for (const [kind, name, behind, lag] of rows.slice(0, 200)) {
      table.append(el("tr", {}, el("td", { text: kind }), el("td", { text: name }), el("td", { text: behind + " B" }), el("td", { text: lag == null ? "-" : (lag / 1000).toFixed(1) + " s" })));
    }
    parts.push(table);
  } catch (e) {
    parts.push(el("p", { text: "replication: " + e.message }));
  }
  try {
    const peers = await api("GET", "/v1/peers");
    const table = el("table", {}, el("tr", {}, ...["peer", "up", "reachable", "fetched", "error"].map((t) => el("th", { text: t }))));
    for (const p of peers) {
      table.append(el("tr", {}, el("td", { text: p.name }), el("td", { text: p.up ? "up" : "down", class: p.up ? "state running" : "state failed" }), el("td", { text: String(p.reachable) }), el("td", { text: p.bytes_fetched + " B" }), el("td", { text: p.last_error || "" })));
    }
    parts.push(el("h3", { text: "Peers" }), table);
    const takeovers = await api("GET", "/v1/failover/status");
    const list = el("ul", {}, ...takeovers.map((t) => el("li", { text: `${t.deployment} of ${t.peer} (${t.image_name}) → ${t.local_deployment || "refused"}` })));
    parts.push(el("h3", { text: "Takeovers" }), takeovers.length ? list : el("p", { text: "none" }));
  } catch (e) {
    parts.push(el("p", { text: "peers: " + e.message }));
  }
  body.replaceChildren(...parts);
}

async function followConsole(id) {
  consoleOf = id;
  let offset = 0;
  $("console").hidden = false;
  $("console-id").textContent = id;
  $("console-log").textContent = "";
  while (consoleOf === id) {
    try {
      const chunk = await api("GET", `/v1/instances/${encodeURIComponent(id)}/logs?offset=${offset}`);
      if (consoleOf !== id) return;
      if (chunk.text) $("console-log").append(chunk.text);
      offset = chunk.next_offset;
      $("console-state").textContent = chunk.running ? "live" : "ended";
    } catch (e) {
      $("console-state").textContent = e.message;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

document.addEventListener("click", (event) => {
  const t = event.target.closest("[data-act],[data-console],[data-page],[data-deployment]");
  if (!t) return;
  if (t.dataset.console) return void followConsole(t.dataset.console);
  if (t.dataset.deployment) {
    $("f-text").value = t.dataset.deployment;
    view.instances = 0;
    return renderInstances();
  }
  if (t.dataset.page) {
    const [kind, step] = t.dataset.page.split(":");
    view[kind] += Number(step);
    return kind === "hosts" ? renderHosts() : renderInstances();
  }
  const act = t.dataset.act;
  if (act === "drain") {
    const host = t.dataset.host;
    return confirmThen(`Drain host ${host}? Its instances move to other hosts and it takes no new ones.`, async () => {
      await api("POST", `/v1/hosts/${encodeURIComponent(host)}/drain`);
      say(`drained ${host}`);
    });
  }
  const id = t.dataset.id;
  const what = { stop: "Stop", start: "Start", restart: "Restart", rm: "Stop and remove" }[act];
  confirmThen(`${what} instance ${id}?`, async () => {
    if (act === "rm") await api("DELETE", `/v1/instances/${encodeURIComponent(id)}`);
    else await api("POST", `/v1/instances/${encodeURIComponent(id)}/${act}`);
    say(`${act}: ${id}`);
  });
});

for (const id of ["f-text", "f-host", "f-state"]) {
  $(id).addEventListener("input", () => {
    view.instances = 0;
    renderInstances();
  });
}
$("host-filter").addEventListener("input", () => {
  view.hosts = 0;
  renderHosts();
});
$("console-close").addEventListener("click", () => {
  consoleOf = null;
  $("console").hidden = true;
});
$("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", headers: { "X-Mast-Csrf": csrf }, credentials: "same-origin" });
  location.href = "/";
});

if (canDeploy) {
  api("GET", "/v1/images")
    .then((images) => {
      $("d-image").replaceChildren(...images.map((i) => el("option", { value: i.name, text: `${i.name} ${i.version}` })));
    })
    .catch((e) => say(e.message, true));
  $("deploy-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const image = $("d-image").value;
    const replicas = Number($("d-replicas").value);
    const memory = $("d-memory").value ? Number($("d-memory").value) : null;
    const args = $("d-args").value.trim() ? $("d-args").value.trim().split(/\s+/) : null;
    const restart = $("d-restart").value || null;
    const text = `Deploy ${replicas} replica(s) of ${image}` + (memory ? `, ${memory} MiB each` : "") + (args ? `, arguments ${args.join(" ")}` : "") + "?";
    confirmThen(text, async () => {
      const made = await api("POST", "/v1/deployments", { image, replicas, memory_mib: memory, args, restart });
      say(`deployment ${made.deployment.id}: ${made.instances.map((i) => i.id).join(", ")}`);
    });
  });
}

refresh();
refreshReplication();
setInterval(refresh, 3000);
setInterval(refreshReplication, 15000);
