// The console's entry: the hash router (#/runs, #/runs/<id>, #/workers,
// #/health), the navigation state and the tokens dialog. Each page is a
// module whose `render(main, params, signal)` fills <main> and keeps it live
// until `signal` aborts, which happens when another page opens.

import { tokens } from "./api.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as workers from "./workers.js";
import * as health from "./health.js";

let current = null;

/** The page of the location's hash, with its parameters. */
function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "runs" && parts[1]) return { name: "runs", page: run, params: { id: decodeURIComponent(parts[1]) } };
  if (parts[0] === "workers") return { name: "workers", page: workers, params };
  if (parts[0] === "health") return { name: "health", page: health, params };
  return { name: "runs", page: runs, params };
}

function show() {
  if (current) current.abort();
  current = new AbortController();
  const { name, page, params } = route();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  page.render(main, params, current.signal);
}

/** The tokens dialog: says whether each token is set, never what it is. */
function openTokens() {
  const dialog = document.getElementById("tokens-dialog");
  if (dialog.open) return;
  const form = document.getElementById("tokens-form");
  form.reset();
  document.getElementById("internal-state").textContent = tokens.internal() ? "An internal token is set." : "No internal token is set.";
  document.getElementById("sync-state").textContent = tokens.sync() ? "A sync token is set." : "No sync token is set: run events are polled instead of streamed.";
  dialog.showModal();
}

function closeTokens(event) {
  const form = event.target;
  const action = event.submitter ? event.submitter.value : "cancel";
  if (action === "forget") tokens.forget();
  if (action === "save") {
    for (const kind of ["internal", "sync"]) {
      const value = form.elements[kind].value;
      if (value.trim()) tokens.set(kind, value);
    }
  }
  form.reset();
  if (action !== "cancel") show();
}

document.getElementById("tokens-button").addEventListener("click", openTokens);
document.getElementById("tokens-form").addEventListener("submit", closeTokens);
document.addEventListener("console:token-needed", () => {
  if (!tokens.internal()) openTokens();
});
window.addEventListener("hashchange", show);
show();
