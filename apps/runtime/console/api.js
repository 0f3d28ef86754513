// Talking to the service: the two tokens (session storage only), JSON reads
// with the internal token, the notice line for failures, and the polling
// loop every live view uses.

const INTERNAL = "openagents.console.internal_token";
const SYNC = "openagents.console.sync_token";

/** The tokens of this tab. Their values are only ever sent, never shown. */
export const tokens = {
  internal: () => sessionStorage.getItem(INTERNAL) || "",
  sync: () => sessionStorage.getItem(SYNC) || "",
  set(kind, value) {
    sessionStorage.setItem(kind === "sync" ? SYNC : INTERNAL, value.trim());
  },
  forget() {
    sessionStorage.removeItem(INTERNAL);
    sessionStorage.removeItem(SYNC);
  },
};

/** A refusal of the service: its status and the contract's error envelope. */
export class ServiceError extends Error {
  constructor(status, envelope) {
    super(envelope && envelope.message ? envelope.message : `HTTP ${status}`);
    this.status = status;
    this.envelope = envelope || {};
  }
}

/** Shows `text` in the notice line (empty clears it). */
export function notice(text) {
  document.getElementById("notice").textContent = text;
}

function headers() {
  const token = tokens.internal();
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** GET `path`; a 401 asks for the internal token once. */
export async function get(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 401) document.dispatchEvent(new CustomEvent("console:token-needed"));
  return response;
}

/** GET `path` as JSON; `null` for 404 when `missingIsNull`. */
export async function getJson(path, { missingIsNull = false } = {}) {
  const response = await get(path);
  if (missingIsNull && response.status === 404) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ServiceError(response.status, body);
  return body;
}

/** GET `path` as text (a receipt, whose exact bytes are checked). */
export async function getText(path) {
  const response = await get(path);
  const text = await response.text();
  if (!response.ok) {
    let envelope = null;
    try { envelope = JSON.parse(text); } catch { envelope = null; }
    throw new ServiceError(response.status, envelope);
  }
  return text;
}

/**
 * Calls `step` now and then every `ms` until `signal` aborts; a failure is
 * shown in the notice line and the loop goes on.
 */
export function poll(ms, signal, step) {
  const tick = async () => {
    if (signal.aborted) return;
    try {
      await step();
      notice("");
    } catch (error) {
      if (!signal.aborted) notice(`Could not refresh: ${error.message}`);
    }
    if (!signal.aborted) setTimeout(tick, ms);
  };
  tick();
}

/** A query string of the non-empty entries of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}
