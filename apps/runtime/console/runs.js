// The Runs page: the filters of GET /internal/v1/runs, a table of one page
// (newest first) with status badges, refreshed every two seconds, and the
// cursor pager.

import { getJson, poll, query } from "./api.js";
import { badge, choice, field, filterForm, h, listState, owner, pagerLinks, table, refill, textFilter, time } from "./dom.js";

const STATUSES = ["created", "running", "canceling", "succeeded", "failed", "canceled"];
const TEXT_FILTERS = [
  ["owner_user_id", "Owner user id"],
  ["owner_guest_scope", "Owner guest scope"],
  ["worker_id", "Worker id"],
  ["created_after", "Created after (RFC 3339)"],
  ["created_before", "Created before (RFC 3339)"],
  ["updated_after", "Updated after (RFC 3339)"],
];
const REFRESH_MS = 2000;

const COLUMNS = [
  { label: "Run", cls: "id" },
  { label: "Status" },
  { label: "Owner", wide: true },
  { label: "Worker", wide: true },
  { label: "Created" },
  { label: "Updated", wide: true },
  { label: "Seq" },
];

function row(run) {
  return [
    h("a", { href: `#/runs/${run.id}` }, run.id),
    badge(run.status),
    owner(run.owner),
    run.worker_id || h("span", { class: "muted" }, "none"),
    time(run.created_at),
    time(run.updated_at),
    String(run.latest_seq),
  ];
}

function filters(params) {
  return filterForm("Filter runs", "#/runs", [
    field("status", "Status", choice(STATUSES, params.get("status"))),
    TEXT_FILTERS.map(([name, label]) => textFilter(params, name, label)),
  ]);
}

export function render(main, params, signal) {
  const state = listState(params);
  const { filter, cursor } = state;
  const body = h("div", { "aria-live": "off" });
  const pager = h("div", { class: "pager" });
  main.append(h("h2", {}, "Runs"), filters(params), body, pager);
  poll(REFRESH_MS, signal, async () => {
    const page = await getJson(`/internal/v1/runs${query({ ...filter, cursor, limit: params.get("limit") || "50" })}`);
    const caption = `${page.runs.length} run${page.runs.length === 1 ? "" : "s"}, newest first${cursor ? " (a later page)" : ""}; refreshed ${new Date().toLocaleTimeString()}`;
    refill(body, page.runs.length
      ? table(caption, COLUMNS, page.runs.map(row))
      : h("p", { class: "muted" }, "No run matches these filters."));
    refill(pager, ...pagerLinks("#/runs", state, page.next_cursor));
  });
}
