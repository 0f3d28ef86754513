// One run: its status (from the run summary projection, refreshed), its
// events as they arrive — over the Khala SSE lane with the sync token, else
// by polling the events route with the internal token — and its artifacts:
// the receipt (with the signature check of receipt.js), the replay
// download, the summary and any drift report.

import { ServiceError, get, getJson, getText, notice, poll, tokens } from "./api.js";
import { badge, h, time } from "./dom.js";
import { checkReceipt } from "./receipt.js";

/** Most events kept on the page; older ones leave it (the replay has all). */
const MAX_EVENTS = 2000;
const SUMMARY_MS = 1500;
const EVENTS_POLL_MS = 1000;
const PAGE = 500;

/** An event of either lane in one shape. */
function fromStream(message) {
  return { seq: message.sequence, type: message.kind, at: message.published_at, payload: message.payload };
}
function fromPage(event) {
  return { seq: event.seq, type: event.event_type, at: event.recorded_at, payload: event.payload };
}

function eventItem(event) {
  return h("li", { "data-seq": event.seq },
    h("details", {},
      h("summary", {}, h("span", { class: "seq" }, `#${event.seq}`), h("span", { class: "type" }, event.type), time(event.at)),
      h("pre", {}, JSON.stringify(event.payload, null, 2))));
}

/** The event list: appends in seq order, skips repeats, keeps MAX_EVENTS. */
function eventList() {
  const list = h("ol", { class: "events", "aria-label": "Events", reversed: false });
  let last = 0;
  return {
    element: list,
    last: () => last,
    add(event, onAdded) {
      if (event.seq <= last) return;
      last = event.seq;
      list.append(eventItem(event));
      while (list.children.length > MAX_EVENTS) list.firstElementChild.remove();
      onAdded(event);
    },
  };
}

/** Follows the run's topic over SSE; `onRefused` when the lane will not serve. */
function stream(id, events, signal, onEvent, onRefused) {
  const topic = encodeURIComponent(`run:${id}:events`);
  const url = `/internal/v1/khala/topics/${topic}/stream?after_seq=${events.last()}&access_token=${encodeURIComponent(tokens.sync())}`;
  const source = new EventSource(url);
  let opened = false;
  let refused = false;
  const refuse = (why) => {
    source.close();
    if (!refused && !signal.aborted) onRefused(why);
    refused = true;
  };
  signal.addEventListener("abort", () => source.close());
  source.addEventListener("open", () => { opened = true; });
  source.addEventListener("message", (message) => onEvent(fromStream(JSON.parse(message.data))));
  source.addEventListener("stale_cursor", () => refuse("the stream's cursor is older than the retained window"));
  source.addEventListener("error", () => {
    // Before it ever opened, the lane refused (token, scope, owner): poll.
    // After, the browser reconnects by itself from the last id.
    if (!opened || source.readyState === EventSource.CLOSED) refuse("the live stream was refused");
  });
}

/** Polls the events route from the last seq seen. */
function pollEvents(id, events, signal, onEvent) {
  poll(EVENTS_POLL_MS, signal, async () => {
    for (;;) {
      const page = await getJson(`/internal/v1/runs/${id}/events?after_seq=${events.last()}&limit=${PAGE}`);
      page.events.forEach((event) => onEvent(fromPage(event)));
      if (page.events.length < PAGE || signal.aborted) return;
    }
  });
}

/** Fetches `path` and offers it as a file download. */
async function download(path, name, slot, signal) {
  const response = await get(path);
  if (!response.ok) throw new ServiceError(response.status, await response.json().catch(() => null));
  const url = URL.createObjectURL(await response.blob());
  signal.addEventListener("abort", () => URL.revokeObjectURL(url));
  const link = h("a", { href: url, download: name }, `Save ${name}`);
  slot.replaceChildren(link);
  link.click();
}

function artifacts(id, signal) {
  const output = h("div", { "aria-live": "polite" });
  const act = (label, action) => h("button", { type: "button", onclick: () => action().catch((error) => notice(error.message)) }, label);
  const showJson = (title, value) => output.replaceChildren(h("h3", {}, title), h("pre", {}, JSON.stringify(value, null, 2)));
  const links = h("div", { class: "links" },
    act("Receipt", async () => {
      const text = await getText(`/internal/v1/runs/${id}/receipt`);
      const mark = h("p", {}, "Checking the signature…");
      showJson("Receipt", JSON.parse(text));
      output.prepend(mark);
      mark.replaceChildren(await checkReceipt(text));
    }),
    act("Download replay", () => download(`/internal/v1/runs/${id}/replay`, `REPLAY-${id}.jsonl`, output, signal)),
    act("Summary", async () => showJson("Run summary", await getJson(`/internal/v1/projectors/run-summary/${id}`))),
    act("Drift", async () => {
      const drift = await getJson(`/internal/v1/projectors/drift?topic=${encodeURIComponent(`run:${id}:events`)}`, { missingIsNull: true });
      if (drift) showJson("Drift report", drift);
      else output.replaceChildren(h("h3", {}, "Drift report"), h("p", {}, "No drift: the projection saw every seq in order."));
    }));
  signal.addEventListener("abort", () => output.replaceChildren());
  return [links, output];
}

export function render(main, params, signal) {
  const id = params.id;
  const status = h("span", { id: "run-status" }, badge("created"));
  const facts = h("dl", { class: "facts" });
  const mode = h("p", { class: "muted", id: "events-mode" });
  const events = eventList();
  main.append(h("h2", {}, "Run ", h("span", { class: "mono" }, id), " ", status), facts, ...artifacts(id, signal),
    h("h3", {}, "Events"), mode, events.element);
  const refresh = async () => {
    const summary = await getJson(`/internal/v1/projectors/run-summary/${id}`);
    status.replaceChildren(badge(summary.summary.status));
    facts.replaceChildren(
      h("dt", {}, "Last seq"), h("dd", {}, String(summary.summary.last_seq)),
      h("dt", {}, "Events"), h("dd", {}, String(summary.summary.event_count)),
      h("dt", {}, "Updated"), h("dd", {}, time(summary.summary.updated_at)));
  };
  poll(SUMMARY_MS, signal, refresh);
  const onEvent = (event) => events.add(event, () => {
    if (event.type === "run.finished" || event.type === "run.cancel_requested") refresh().catch(() => {});
  });
  const fallBack = (why) => {
    mode.textContent = `Polling the events route (${why}).`;
    pollEvents(id, events, signal, onEvent);
  };
  if (tokens.sync()) {
    mode.textContent = "Live over the Khala SSE lane.";
    stream(id, events, signal, onEvent, fallBack);
  } else {
    fallBack("no sync token is set");
  }
}
