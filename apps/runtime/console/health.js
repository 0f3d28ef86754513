// The Health page: readiness (/readyz), write mode (/healthz), and charts of
// the append rate, the mean fsync latency and the mean batch size of each
// two-second interval, read from the Prometheus text of /metrics.

import { get, poll } from "./api.js";
import { chart } from "./chart.js";
import { badge, h } from "./dom.js";

const REFRESH_MS = 2000;

/** The unlabelled samples of a Prometheus text exposition, by name. */
export function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/.exec(line);
    if (match) values.set(match[1], Number(match[2]));
  }
  return values;
}

/** The change of a counter between two samples, `null` without both. */
function delta(now, before, name) {
  if (!before || !now.has(name) || !before.has(name)) return null;
  return now.get(name) - before.get(name);
}

function facts(ready, healthy) {
  const status = ready.status === "ready" ? "ready" : "not_ready";
  const rows = [
    ["Readiness", badge(status)],
    ["Authority ready", String(ready.authority_ready)],
    ["Projections ready", String(ready.projector_ready)],
    ["Write mode", healthy.authority_write_mode],
    ["Writer active", String(healthy.authority_writer_active)],
    ["Storage", healthy.storage_backend],
    ["Fan-out", healthy.fanout_driver],
    ["Version", `${healthy.version} (${healthy.build_sha})`],
    ["Up", `${healthy.uptime_seconds} s`],
  ];
  return rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]);
}

export function render(main, _params, signal) {
  const list = h("dl", { class: "facts", id: "health-facts" });
  const rate = chart("Append rate", "records/s", (v) => v.toFixed(v < 10 ? 1 : 0));
  const fsync = chart("Mean fsync latency", "ms", (v) => v.toFixed(2));
  const batch = chart("Mean batch size", "records", (v) => v.toFixed(1));
  main.append(h("h2", {}, "Health"), list,
    h("div", { class: "charts" }, rate.element, fsync.element, batch.element));
  let before = null;
  let beforeAt = 0;
  poll(REFRESH_MS, signal, async () => {
    const [ready, healthy, metrics] = await Promise.all([
      get("/readyz").then((r) => r.json()),
      get("/healthz").then((r) => r.json()),
      get("/metrics").then((r) => r.text()),
    ]);
    list.replaceChildren(...facts(ready, healthy));
    const now = parseMetrics(metrics);
    const at = performance.now();
    const seconds = (at - beforeAt) / 1000;
    const records = delta(now, before, "runtime_log_records_appended_total");
    const syncs = delta(now, before, "runtime_log_write_sync_seconds_count");
    const syncSeconds = delta(now, before, "runtime_log_write_sync_seconds_sum");
    const batches = delta(now, before, "runtime_log_batch_records_count");
    const batched = delta(now, before, "runtime_log_batch_records_sum");
    if (before) {
      rate.push(records / seconds);
      fsync.push(syncs ? (syncSeconds / syncs) * 1000 : null);
      batch.push(batches ? batched / batches : null);
    }
    before = now;
    beforeAt = at;
  });
}
