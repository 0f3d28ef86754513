// The Workers page: GET /internal/v1/workers with its filters, each
// worker's heartbeat state (fresh, stale, missing, stopped, failed — the
// service's own verdict, never recomputed here) as a badge, refreshed every
// two seconds.

import { getJson, poll, query } from "./api.js";
import { ago, badge, choice, field, filterForm, h, listState, owner, pagerLinks, table, refill, textFilter, time } from "./dom.js";

const STATES = ["fresh", "stale", "missing", "stopped", "failed"];
const STATUSES = ["starting", "running", "stopping", "stopped", "failed"];
const REFRESH_MS = 2000;

const COLUMNS = [
  { label: "Worker", cls: "id" },
  { label: "Heartbeat" },
  { label: "Status" },
  { label: "Owner" },
  { label: "Last heartbeat" },
  { label: "Adapter", wide: true },
];

function row({ worker, liveness }) {
  const last = worker.last_heartbeat_at;
  return [
    worker.worker_id,
    badge(liveness.heartbeat_state),
    badge(worker.status),
    owner(worker.owner),
    last ? h("span", {}, time(last), h("span", { class: "muted" }, ` (${ago(last)})`)) : h("span", { class: "muted" }, "never"),
    worker.adapter || "",
  ];
}

function filters(params) {
  return filterForm("Filter workers", "#/workers", [
    field("heartbeat_state", "Heartbeat", choice(STATES, params.get("heartbeat_state"))),
    field("status", "Status", choice(STATUSES, params.get("status"))),
    textFilter(params, "owner_user_id", "Owner user id"),
    textFilter(params, "owner_guest_scope", "Owner guest scope"),
  ]);
}

export function render(main, params, signal) {
  const state = listState(params);
  const { filter, cursor } = state;
  const summary = h("p", { class: "muted" });
  const body = h("div");
  const pager = h("div", { class: "pager" });
  main.append(h("h2", {}, "Workers"), filters(params), summary, body, pager);
  poll(REFRESH_MS, signal, async () => {
    const page = await getJson(`/internal/v1/workers${query({ ...filter, cursor, limit: "100" })}`);
    const counts = STATES.map((state) => [state, page.workers.filter((w) => w.liveness.heartbeat_state === state).length]);
    summary.replaceChildren(...counts.filter(([, n]) => n).flatMap(([state, n]) => [badge(state), ` ${n}  `]));
    const limit = page.workers[0] ? page.workers[0].liveness.heartbeat_stale_after_ms : null;
    const caption = `${page.workers.length} worker${page.workers.length === 1 ? "" : "s"} by id${limit !== null ? `; stale after ${limit / 1000} s without a heartbeat` : ""}`;
    refill(body, page.workers.length
      ? table(caption, COLUMNS, page.workers.map(row))
      : h("p", { class: "muted" }, "No worker matches these filters."));
    refill(pager, ...pagerLinks("#/workers", state, page.next_cursor));
  });
}
