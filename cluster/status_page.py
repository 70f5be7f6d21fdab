"""The status page: one self-contained HTML document (no external assets) that polls ``/status.json``.

Clusters are rows and shards are cells coloured by state; hovering a cell shows its latency, guilds
and time since its last event. The page carries no token: with ``INNKEEPER_STATUS_TOKEN`` set the
browser authenticates with HTTP basic auth (its own prompt), and sends the same credentials with
the page's ``status.json`` requests.
"""

from __future__ import annotations

__all__ = ("render_page",)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Innkeeper status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;background:#111;color:#ddd}
h1{font-size:1.3em;margin:0 0 .3em} #summary{margin:.2em 0 1em;font-size:1.1em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #333;
vertical-align:top} th{color:#999;font-weight:normal}
.cells{display:flex;flex-wrap:wrap;gap:3px;max-width:60em}
.cell{min-width:2.2em;padding:1px 3px;border-radius:3px;font-size:11px;text-align:center;color:#111}
.READY{background:#3fb950}.IDENTIFYING{background:#d29922}.CONNECTING{background:#8b949e}
.RESUMING{background:#58a6ff}.DISCONNECTED{background:#f85149}.DOWN{background:#6e2a2a;color:#eee}
.state{font-weight:600}.state.READY,.state.STARTING,.state.DEGRADED,.state.BLOCKED,.state.STOPPING,.state.DOWN{
padding:1px 6px;border-radius:3px;color:#111}.state.STARTING{background:#d29922}.state.DEGRADED{background:#db6d28}
.state.BLOCKED{background:#f85149}.state.STOPPING{background:#8b949e}
.state.STALE{background:#f85149;color:#111;padding:1px 6px;border-radius:3px}
.reason{color:#f85149} .shed{color:#d29922} .muted{color:#888} #err{color:#f85149}
.legend span{margin-right:.6em}
</style></head>
<body>
<h1>Innkeeper cluster status</h1>
<div id="summary">loading…</div>
<div class="legend muted"><span class="cell READY">READY</span><span class="cell IDENTIFYING">IDENTIFYING</span>
<span class="cell CONNECTING">CONNECTING</span><span class="cell RESUMING">RESUMING</span>
<span class="cell DISCONNECTED">DISCONNECTED</span><span class="cell DOWN">DOWN</span></div>
<div id="err"></div>
<table><thead><tr><th>cluster</th><th>state</th><th>host / pid</th><th>uptime</th><th>RSS</th><th>events/s</th>
<th>commands</th><th>metrics</th><th>shards</th></tr></thead><tbody id="rows"></tbody></table>
<p class="muted">Refreshes every __REFRESH_S__ s from <code>/status.json</code>.
Last update: <span id="at">never</span></p>
<script>
"use strict";
const url = "status.json";
function esc(v) { return String(v).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;",
  "'":"&#39;"}[c])); }
function dur(s) { if (s == null) return "–"; s = Math.round(s); const h = Math.floor(s / 3600),
  m = Math.floor(s % 3600 / 60); return h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s"; }
function mib(b) { return b == null ? "–" : (b / 1048576).toFixed(0) + " MiB"; }
function cell(s) {
  const tip = "shard " + s.id + ": " + s.state + (s.latency_ms != null ? ", " + s.latency_ms + " ms" : "") +
    ", " + s.guilds + " guilds" + (s.last_event_age_s != null ? ", last event " + s.last_event_age_s + " s ago" : "");
  return '<span class="cell ' + esc(s.state) + '" title="' + esc(tip) + '">' + esc(s.id) + "</span>";
}
function load(k) {
  if (k == null) return "–";
  const tip = k.running + " of " + k.max_running + " running, " + k.queued + " of " + k.max_queued +
    " waiting; since start " + k.deferred + " deferred while waiting, " + k.shed + " shed (busy)";
  return '<span title="' + esc(tip) + '">' + esc(k.running) + " run · " + esc(k.queued) + " wait" +
    (k.shed ? ' · <span class="shed">' + esc(k.shed) + " shed</span>" : "") + "</span>";
}
function row(c) {
  const tripped = Object.entries(c.breakers || {}).map(([k, v]) => k + " " + v).join(", ");
  const reason = (c.identify_blocked_reason ? '<div class="reason">' + esc(c.identify_blocked_reason) + "</div>" : "") +
    (tripped ? '<div class="reason">breakers: ' + esc(tripped) + "</div>" : "") +
    (c.crash_guard ? '<div class="reason">' + esc(c.crash_guard.reason) + "</div>" : "");
  const metrics = c.metrics_port ? ":" + esc(c.metrics_port) : "–";
  const gen = c.generation ? ' <span class="muted">g' + esc(c.generation) + "</span>" : "";
  const handles = c.handles && c.handles !== "all" ? '<div class="muted">handles ' + esc(c.handles) + "</div>" : "";
  return "<tr><td>cluster-" + esc(c.id) + gen + handles + '</td><td><span class="state ' + esc(c.state) + '">' +
    esc(c.state) +
    "</span>" + reason + "</td><td>" + (c.pid ? esc(c.host) + " / " + esc(c.pid) : "–") + "</td><td>" +
    dur(c.uptime_s) + "</td><td>" + mib(c.rss_bytes) + "</td><td>" + (c.events_per_s ?? "–") + "</td><td>" +
    load(c.commands) + "</td><td>" + metrics + '</td><td><div class="cells">' + c.shards.map(cell).join("") +
    "</div></td></tr>";
}
async function refresh() {
  try {
    const r = await fetch(url, {cache: "no-store", credentials: "same-origin"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    const rs = d.reshard;
    const shards = d.clusters.filter(c => !rs || c.generation == null ||
      c.generation === (rs.phase === "starting" ? rs.from_generation : rs.to_generation)).flatMap(c => c.shards);
    const ready = shards.filter(s => s.state === "READY").length;
    const total = d.shard_count ?? shards.length;
    const up = d.clusters.filter(c => c.state === "READY").length;
    document.getElementById("summary").textContent = ready + "/" + total + " shards READY, " + up + "/" +
      d.clusters.length + " clusters READY, max_concurrency " + (d.max_concurrency ?? "?") + (rs ?
      " · resharding " + (rs.from_shards ?? "?") + " → " + (rs.to_shards ?? "?") + " shards (generation " +
      rs.from_generation + " → " + rs.to_generation + "): " + rs.phase : "") + (d.auto_reshard &&
      d.auto_reshard.target ? " · Discord recommends " + d.auto_reshard.recommended + " shards: " +
      d.auto_reshard.action + (d.auto_reshard.detail ? " (" + d.auto_reshard.detail + ")" : "") : "");
    document.getElementById("rows").innerHTML = d.clusters.map(row).join("");
    document.getElementById("err").textContent = "";
    document.getElementById("at").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("err").textContent = "cannot read status.json: " + e.message;
  }
}
refresh();
setInterval(refresh, __REFRESH_MS__);
</script>
</body></html>
"""


def render_page(refresh_s: float = 2.0) -> str:
    """The page, refreshing every ``refresh_s`` seconds."""
    return _PAGE.replace("__REFRESH_S__", f"{refresh_s:g}").replace("__REFRESH_MS__", str(round(refresh_s * 1000)))
