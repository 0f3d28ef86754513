// The console in a real browser. Starts the service binary (built by
// `cargo build -p openagents-runtime-service`, or RUNTIME_BIN) on a free
// loopback port with an internal token, a sync-token key, a receipt
// signing key and a short heartbeat stale limit; drives Debian's headless
// Chromium with Playwright through every page while creating runs, events
// and workers over HTTP; and saves a screenshot of each page in
// docs/console/ (or CONSOLE_SCREENSHOTS).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = process.env.RUNTIME_BIN || join(ROOT, "target/debug/openagents-runtime-service");
const SHOTS = process.env.CONSOLE_SCREENSHOTS || join(ROOT, "docs/console");
const INTERNAL_TOKEN = "console-test-internal-token";
const SYNC_KEY = "console-test-sync-key";
const STALE_AFTER_MS = 3000;
/** BIP-340 test vector 0's secret key (3); any 32-byte key would do. */
const RECEIPT_KEY = "0000000000000000000000000000000000000000000000000000000000000003";
const FIRST_LOAD_LIMIT = 300 * 1024;

let service;
let base;
let data;
let browser;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

function base64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

/** An HS256 sync token for user 1 with the run-events scope. */
function syncToken() {
  const head = base64url({ alg: "HS256", typ: "JWT" });
  const claims = base64url({
    iss: "https://openagents.com",
    aud: "openagents-sync",
    exp: Math.floor(Date.now() / 1000) + 600,
    oa_user_id: 1,
    oa_sync_scopes: ["runtime.run_events"],
  });
  const signature = createHmac("sha256", SYNC_KEY).update(`${head}.${claims}`).digest("base64url");
  return `${head}.${claims}.${signature}`;
}

async function call(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${INTERNAL_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

const createRun = (body = {}) => call("POST", "/internal/v1/runs", body).then((answer) => answer.run);
const append = (id, event_type, payload = {}) => call("POST", `/internal/v1/runs/${id}/events`, { event_type, payload });
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function waitReady() {
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error("the service did not become ready");
}

before(async () => {
  data = mkdtempSync(join(tmpdir(), "console-test-"));
  writeFileSync(join(data, "receipt.key"), RECEIPT_KEY);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  service = spawn(BIN, [], {
    stdio: ["ignore", "ignore", "inherit"],
    env: {
      ...process.env,
      RUST_LOG: "warn",
      RUNTIME_BIND_ADDR: `127.0.0.1:${port}`,
      RUNTIME_EVENT_LOG_PATH: join(data, "events.jsonl"),
      RUNTIME_CHECKPOINT_PATH: join(data, "projections.json"),
      RUNTIME_INTERNAL_AUTH_TOKEN: INTERNAL_TOKEN,
      RUNTIME_SYNC_TOKEN_SIGNING_KEY: SYNC_KEY,
      RUNTIME_RECEIPT_SIGNING_KEY_FILE: join(data, "receipt.key"),
      RUNTIME_WORKER_HEARTBEAT_STALE_AFTER_MS: String(STALE_AFTER_MS),
    },
  });
  await waitReady();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  if (browser) await browser.close();
  if (service && service.exitCode === null) {
    // The service writes its snapshot as it stops: remove its folder after.
    const exited = new Promise((resolve) => service.once("exit", resolve));
    service.kill("SIGTERM");
    await exited;
  }
  if (data) rmSync(data, { recursive: true, force: true });
});

/** A page that fails the test on any script error or policy violation. */
async function openConsole(width = 1100) {
  const context = await browser.newContext({ viewport: { width, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/.test(message.text())) problems.push(message.text());
  });
  return { page, problems, context };
}

/** Types both tokens into the dialog the first 401 opens. */
async function signIn(page) {
  const dialog = page.getByRole("dialog", { name: "Tokens" });
  await dialog.waitFor();
  await page.getByLabel(/Internal token/).fill(INTERNAL_TOKEN);
  await page.getByLabel(/Sync token/).fill(syncToken());
  await page.getByRole("button", { name: "Save" }).click();
  await dialog.waitFor({ state: "hidden" });
}

test("the console follows runs, events and workers live", async () => {
  const { page, problems, context } = await openConsole();
  const firstLoad = [];
  page.on("response", async (response) => {
    if (new URL(response.url()).pathname.startsWith("/console")) {
      const body = await response.body().catch(() => Buffer.alloc(0));
      firstLoad.push(body.length + JSON.stringify(await response.allHeaders()).length);
    }
  });
  await page.goto(`${base}/console`);
  await signIn(page);
  const transferred = firstLoad.reduce((sum, bytes) => sum + bytes, 0);
  assert.ok(transferred <= FIRST_LOAD_LIMIT, `first load transferred ${transferred} bytes`);

  // Runs created over HTTP appear without a reload.
  const runs = [];
  for (let n = 0; n < 3; n++) runs.push(await createRun({ metadata: { n } }));
  for (const run of runs) await page.getByRole("link", { name: run.id }).waitFor();
  const rows = await page.locator("tbody tr").count();
  assert.equal(rows, 3);
  // Newest first.
  assert.equal(await page.locator("tbody tr").first().getByRole("link").textContent(), runs[2].id);
  await page.getByLabel("Status").selectOption("running");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.waitForURL(/status=running/);
  await page.screenshot({ path: join(SHOTS, "runs.png"), fullPage: true });

  // One run, opened from the keyboard: the refreshes keep focus on its link.
  const run = runs[2];
  await page.getByRole("link", { name: run.id }).focus();
  await sleep(2500);
  assert.equal(await page.evaluate(() => document.activeElement.textContent), run.id);
  await page.keyboard.press("Enter");
  // Its events, appended over HTTP, arrive over the SSE lane.
  await page.getByRole("heading", { name: new RegExp(run.id) }).waitFor();
  await page.getByText("Live over the Khala SSE lane.").waitFor();
  await append(run.id, "tool.call.completed", { tool: "shell", params: { cmd: "ls" }, output: { ok: true }, latency_ms: 12 });
  await append(run.id, "note", { text: "halfway" });
  await page.locator('li[data-seq="3"]').waitFor();
  await page.locator('li[data-seq="2"] summary').click();
  await page.getByText('"cmd": "ls"').waitFor();
  await append(run.id, "run.finished", { status: "succeeded" });
  await page.locator('li[data-seq="4"]').waitFor();
  await page.locator("#run-status .badge.succeeded").waitFor();
  // The receipt is signed, and the browser checks the signature.
  await page.getByRole("button", { name: "Receipt" }).click();
  await page.locator("#receipt-mark .badge.verified").waitFor();
  await page.screenshot({ path: join(SHOTS, "run.png"), fullPage: true });

  // A worker that stops sending heartbeats is marked stale; a live one fresh.
  await call("POST", "/internal/v1/workers", { worker_id: "w-quiet", owner_user_id: 1, adapter: "codex" });
  await call("POST", "/internal/v1/workers", { worker_id: "w-busy", owner_user_id: 1, adapter: "codex" });
  await sleep(STALE_AFTER_MS + 300);
  await call("POST", "/internal/v1/workers/w-busy/heartbeat", { owner_user_id: 1 });
  await page.getByRole("link", { name: "Workers" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Workers" }).waitFor();
  const quiet = page.locator("tbody tr", { hasText: "w-quiet" });
  const busy = page.locator("tbody tr", { hasText: "w-busy" });
  await quiet.locator(".badge.stale").waitFor();
  await busy.locator(".badge.fresh").waitFor();
  await page.screenshot({ path: join(SHOTS, "workers.png"), fullPage: true });

  // Health: readiness, write mode and charts fed from /metrics.
  await page.getByRole("link", { name: "Health" }).click();
  await page.locator("#health-facts .badge.ready").waitFor();
  await page.getByText("rust_active").waitFor();
  // Enough load and time for a few two-second samples of each chart.
  for (let n = 0; n < 40; n++) {
    await append(runs[0].id, "note", { n });
    await sleep(150 + (n % 10) * 20);
  }
  await page.locator('canvas[aria-label^="Append rate: now"]').waitFor();
  const samples = await page.locator("canvas").first().getAttribute("data-samples");
  assert.ok(Number(samples) >= 3, `${samples} samples`);
  await page.screenshot({ path: join(SHOTS, "health.png"), fullPage: true });

  // No secret is ever on the page, and the policy refused nothing.
  const text = await page.evaluate(() => document.documentElement.outerHTML);
  assert.ok(!text.includes(INTERNAL_TOKEN), "the internal token is on the page");
  assert.deepEqual(problems, []);
  await context.close();
});

test("a tampered receipt is marked not verified", async () => {
  const { page, context } = await openConsole();
  await page.goto(`${base}/console`);
  await signIn(page);
  const run = await createRun();
  const receipt = await (await fetch(`${base}/internal/v1/runs/${run.id}/receipt`, { headers: { authorization: `Bearer ${INTERNAL_TOKEN}` } })).text();
  const key = (await call("GET", "/internal/v1/receipts/signing-key")).signer_pubkey;
  const verdicts = await page.evaluate(async ([text, signer]) => {
    const { receiptProblem } = await import("/console/assets/receipt.js");
    const flip = (from, to) => text.replace(from, to);
    return [
      receiptProblem(text, signer),
      receiptProblem(flip(/"event_count":\d+/, '"event_count":99'), signer),
      receiptProblem(flip(/"signature_hex":"(.)/, (_, c) => `"signature_hex":"${c === "0" ? "1" : "0"}`), signer),
      receiptProblem(text, "00".repeat(32)),
    ];
  }, [receipt, key]);
  assert.equal(verdicts[0], null);
  assert.match(verdicts[1], /canonical_json_sha256/);
  assert.match(verdicts[2], /does not verify/);
  assert.match(verdicts[3], /published signing key/);
  await context.close();
});

test("the pages read in a narrow window", async () => {
  const { page, context } = await openConsole(360);
  await page.goto(`${base}/console`);
  await signIn(page);
  for (const hash of ["#/runs", "#/workers", "#/health"]) {
    await page.goto(`${base}/console${hash}`);
    await page.locator("main h2").waitFor();
    await sleep(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `${hash} is ${overflow}px wider than the window`);
  }
  await context.close();
});
