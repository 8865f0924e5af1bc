// Kafscale console: renders the broker state from /ui/events (server-sent events,
// one JSON state per second) after a first /ui/api/state. Every name from the
// broker goes into the page as text (textContent / text nodes), never as HTML.
"use strict";

const HISTORY = 60;
const history = []; // [{produce, fetch}] in bytes per second, oldest first

// el("td", {class: "num"}, "text", childNode, ...): an element with text children.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
}

function rate(n) {
  return n === null || n === undefined ? "–" : bytes(n) + "/s";
}

function num(n) {
  return n === null || n === undefined ? "–" : String(n);
}

function duration(sec) {
  const d = Math.floor(sec / 86400), h = Math.floor(sec / 3600) % 24;
  const m = Math.floor(sec / 60) % 60, s = sec % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function fillBody(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function row(cells) {
  // cells: [value, isNumeric]
  return el("tr", null, ...cells.map(([v, n]) => el("td", n ? { class: "num" } : null, v)));
}

function renderCards(s) {
  const r = s.rates;
  setText("produce-bps", r ? rate(r.produce_bytes_per_sec) : "measuring…");
  setText("fetch-bps", r ? rate(r.fetch_bytes_per_sec) : "measuring…");
  setText("produce-rps", r ? `${r.produce_requests_per_sec.toFixed(1)} requests/s` : "");
  setText("fetch-rps", r ? `${r.fetch_requests_per_sec.toFixed(1)} requests/s` : "");
  const st = document.getElementById("store-state");
  st.textContent = s.store.health.state;
  st.className = "value " + s.store.health.state;
  const h = s.store.health;
  const rating = `avg latency ${h.latency_avg_ms.toFixed(1)} ms · error rate ${(h.error_rate * 100).toFixed(1)}%`;
  setText("store-detail", h.detail ? `${h.detail} · ${rating}` : rating);
  setText("connections", num(s.broker.open_connections));
  setText("uptime", "up " + duration(s.broker.uptime_sec));
  setText("cluster", `cluster ${s.broker.cluster_id} · broker ${s.broker.id} · ${s.broker.address}`);
}

function renderBrokers(s) {
  const b = s.broker;
  fillBody(document.getElementById("brokers"), [
    row([[b.id, true], [b.address], [b.cluster_id], [b.shards, true], [duration(b.uptime_sec)]]),
  ]);
  fillBody(document.getElementById("shards"), s.shards.map((x) => row([
    [x.shard, true], [x.partitions, true], [x.groups, true], [bytes(x.unflushed_bytes), true],
    [x.upload_queue, true], [x.uploads_in_flight, true],
  ])));
}

function renderTopics(s) {
  const rates = new Map(((s.rates && s.rates.topics) || []).map((t) => [t.topic, t]));
  const blocks = s.topics.map((t) => {
    const tr = rates.get(t.name);
    const head = el("h3", null, t.name, " ",
      el("span", { class: "muted small" },
        `${t.partitions.length} partition${t.partitions.length === 1 ? "" : "s"} · in ${tr ? rate(tr.produce_bytes_per_sec) : "–"}` +
        ` · out ${tr ? rate(tr.fetch_bytes_per_sec) : "–"} · produced ${bytes(t.produce_bytes_total)} · fetched ${bytes(t.fetch_bytes_total)}`));
    const table = el("table", { class: "partitions" },
      el("thead", null, el("tr", null,
        el("th", { class: "num" }, "partition"), el("th", { class: "num" }, "shard"),
        el("th", { class: "num" }, "log start"), el("th", { class: "num" }, "high watermark"),
        el("th", { class: "num" }, "next offset"), el("th", { class: "num" }, "segments"),
        el("th", { class: "num" }, "bytes in store"), el("th", { class: "num" }, "unflushed"))),
      el("tbody", null, ...t.partitions.map((p) => p.loaded
        ? row([[p.partition, true], [p.shard, true], [num(p.log_start), true], [num(p.high_watermark), true],
          [num(p.next_offset), true], [num(p.segments), true], [bytes(p.store_bytes), true], [bytes(p.unflushed_bytes), true]])
        : el("tr", null, el("td", { class: "num" }, p.partition), el("td", { class: "num" }, p.shard),
          el("td", { colspan: 6, class: "muted" }, "loading from the object store…")))));
    return el("div", { class: "block topic", "data-topic": t.name }, head, table);
  });
  document.getElementById("topics").replaceChildren(
    ...(blocks.length ? blocks : [el("p", { class: "muted" }, "No topics.")]));
}

function assignmentText(m) {
  if (m.assignment === null) return `${m.assignment_bytes} bytes (not a consumer assignment)`;
  if (m.assignment.length === 0) return "none";
  return m.assignment.map((a) => `${a.topic}: ${a.partitions.join(", ")}`).join("; ");
}

function renderGroups(s) {
  const blocks = s.groups.map((g) => {
    const head = el("h3", null, g.id, " ",
      el("span", { class: "muted small" },
        `${g.state} · generation ${g.generation} · ${g.protocol_type || "–"}/${g.protocol || "–"} · total lag ${g.total_lag}`));
    const members = el("table", { class: "members" },
      el("thead", null, el("tr", null, el("th", null, "member"), el("th", null, "client id"),
        el("th", null, "host"), el("th", null, "assignment"))),
      el("tbody", null, ...g.members.map((m) => row([
        [m.member_id + (m.member_id === g.leader ? " (leader)" : "")], [m.client_id], [m.host], [assignmentText(m)],
      ]))));
    const offsets = el("table", { class: "offsets" },
      el("thead", null, el("tr", null, el("th", null, "topic"), el("th", { class: "num" }, "partition"),
        el("th", { class: "num" }, "committed"), el("th", { class: "num" }, "high watermark"),
        el("th", { class: "num" }, "lag"))),
      el("tbody", null, ...g.offsets.map((o) => row([
        [o.topic], [o.partition, true], [num(o.committed), true], [num(o.high_watermark), true], [num(o.lag), true],
      ]))));
    return el("div", { class: "block group", "data-group": g.id }, head,
      g.members.length ? members : el("p", { class: "muted" }, "No members."), offsets);
  });
  document.getElementById("groups").replaceChildren(
    ...(blocks.length ? blocks : [el("p", { class: "muted" }, "No consumer groups.")]));
}

function renderStore(s) {
  const rates = new Map(((s.rates && s.rates.store) || []).map((o) => [o.operation, o]));
  fillBody(document.getElementById("store"), s.store.operations.map((o) => {
    const r = rates.get(o.operation);
    return row([[o.operation], [o.requests, true], [o.errors, true],
      [r ? r.requests_per_sec.toFixed(1) : "–", true], [r ? r.errors_per_sec.toFixed(1) : "–", true]]);
  }));
}

function drawChart() {
  const c = document.getElementById("chart");
  const w = c.width, h = c.height, ctx = c.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...history.map((p) => Math.max(p.produce, p.fetch)));
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px sans-serif";
  ctx.fillText(rate(max), 6, 12);
  const style = getComputedStyle(document.documentElement);
  for (const [key, color] of [["produce", style.getPropertyValue("--produce")], ["fetch", style.getPropertyValue("--fetch")]]) {
    ctx.strokeStyle = color.trim() || "#000";
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((p, i) => {
      const x = w - (history.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - 4 - (p[key] / max) * (h - 20);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

let lastAt = 0;
function render(s) {
  // Events and the first fetch may arrive out of order; never go back in time.
  if (s.at_ms < lastAt) return;
  lastAt = s.at_ms;
  document.getElementById("error").hidden = true;
  renderCards(s);
  renderBrokers(s);
  renderTopics(s);
  renderGroups(s);
  renderStore(s);
  if (s.rates) {
    history.push({ produce: s.rates.produce_bytes_per_sec, fetch: s.rates.fetch_bytes_per_sec });
    while (history.length > HISTORY) history.shift();
    drawChart();
  }
}

function showError(text) {
  const e = document.getElementById("error");
  e.textContent = text;
  e.hidden = false;
}

function live(on) {
  const b = document.getElementById("live");
  b.textContent = on ? "live" : "disconnected";
  b.className = "badge " + (on ? "on" : "off");
}

async function start() {
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    const body = await r.json();
    if (r.ok) render(body); else showError("Broker state unavailable: " + body.error);
  } catch (e) {
    showError("Cannot reach the broker: " + e);
  }
  const events = new EventSource("events");
  events.addEventListener("open", () => live(true));
  events.addEventListener("error", () => live(false));
  events.addEventListener("state", (ev) => { live(true); render(JSON.parse(ev.data)); });
  events.addEventListener("unavailable", (ev) => {
    showError("Broker state unavailable: " + JSON.parse(ev.data).error);
  });
}

start();
