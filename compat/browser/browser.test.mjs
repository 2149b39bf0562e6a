// The AWS SDK for JavaScript v3, bundled into a page, in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core): the page is served
// from one loopback origin and calls the real ripstream binary on another,
// so every call goes through a real CORS preflight.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.RIPSTREAM_BIN ?? join(here, "..", "..", "target", "debug", "ripstream");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// As the machine notes say works here: no sandbox (root), and none of the
// background connections Chromium makes at start (the network is closed).
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const work = mkdtempSync(join(tmpdir(), "ripstream-compat-browser-"));
const cleanups = [];
async function cleanUp() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch (e) {
      console.error("cleanup:", e);
    }
  }
  rmSync(work, { recursive: true, force: true });
}
// Interrupted (run.sh's trap sends SIGTERM): still stop the browser and the
// servers. A hard exit at least kills the server process.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => cleanUp().finally(() => process.exit(1)));
}
let server;
process.on("exit", () => server?.child.kill("SIGKILL"));

async function startRipstream() {
  const logPath = join(work, "ripstream.log");
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(work, "data")], {
    stdio: ["ignore", "pipe", openSync(logPath, "w")],
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    }
  };
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(""), 60_000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once("exit", () => resolve(""));
  });
  lines.on("line", () => {});
  // The start-up line ends with the address actually bound.
  const url = first.trim().split(/\s+/).pop() ?? "";
  if (!url.startsWith("http")) {
    await stop();
    throw new Error(`ripstream did not start: ${JSON.stringify(first)}\n${readFileSync(logPath, "utf8")}`);
  }
  return { child, url, stop, log: () => readFileSync(logPath, "utf8") };
}

// The page's own origin: a static server on another loopback port.
async function servePage(files) {
  const served = [];
  const http = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    served.push(`${req.method} ${path}`);
    const file = files[path];
    if (req.method !== "GET" || !file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file.type, "cache-control": "no-store" }).end(file.body);
  });
  await new Promise((resolve, reject) => http.once("error", reject).listen(0, "127.0.0.1", resolve));
  const stop = () => new Promise((resolve) => http.close(resolve));
  return { url: `http://127.0.0.1:${http.address().port}/`, served, stop };
}

let page;
let pageServer;
let context;

before(async () => {
  const bundle = await build({
    entryPoints: [join(here, "app", "main.js")],
    bundle: true,
    platform: "browser",
    format: "iife",
    target: "es2022",
    write: false,
    logLevel: "error",
  });
  pageServer = await servePage({
    "/": { type: "text/html; charset=utf-8", body: readFileSync(join(here, "app", "index.html")) },
    "/app.js": { type: "text/javascript; charset=utf-8", body: bundle.outputFiles[0].contents },
  });
  cleanups.push(pageServer.stop);
  server = await startRipstream();
  cleanups.push(server.stop);
  // A fresh profile every run: no cached preflight, no state from before.
  const profile = join(work, "profile");
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  cleanups.push(() => context.close());
  page = context.pages()[0] ?? (await context.newPage());
});

after(cleanUp);

test("a page on another loopback origin puts and reads records through CORS", { timeout: 120_000 }, async () => {
  assert.notEqual(new URL(pageServer.url).origin, new URL(server.url).origin, "the page must be cross-origin");

  const problems = [];
  const allowedConsoleErrors = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // Chromium logs every 4xx fetch; the one deliberate error call is fine.
    if (
      /Failed to load resource: the server responded with a status of 400/.test(m.text()) &&
      m.location().url.startsWith(`${new URL(server.url).origin}/`)
    ) {
      allowedConsoleErrors.push(m);
    } else {
      problems.push(`console error: ${m.text()} (${m.location().url})`);
    }
  });
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));

  // Chromium sends a preflight from its network service; the DevTools
  // protocol reports it (initiator type "preflight").
  const cdp = await context.newCDPSession(page);
  const sent = [];
  const responses = new Map();
  cdp.on("Network.requestWillBeSent", (e) => sent.push(e));
  cdp.on("Network.responseReceived", (e) => responses.set(e.requestId, e.response));
  await cdp.send("Network.enable");
  const playwrightRequests = [];
  page.on("request", (r) => playwrightRequests.push(`${r.method()} ${r.url()}`));

  const stream = `browser-${randomBytes(4).toString("hex")}`;
  const tag = randomBytes(6).toString("hex");
  const records = [
    { partitionKey: "user-1", data: JSON.stringify({ clicked: true, tag }) },
    { partitionKey: "user-2", data: `héllo wörld ✓ 🚀 ${tag}` },
    { partitionKey: `pk-${tag}`, data: `${"x".repeat(3000)}${tag}` },
    { partitionKey: "user-1", data: `line one\nline two\t${tag}` },
  ];

  await page.goto(pageServer.url);
  await page.fill("#endpoint", server.url);
  await page.fill("#stream", stream);
  await page.fill("#records", JSON.stringify(records));
  await page.click("#run");
  await page.waitForFunction(() => /^(done|failed)/.test(document.getElementById("status").value), null, {
    timeout: 90_000,
  });
  const status = await page.locator("#status").textContent();
  assert.equal(status, "done", `the page says: ${status}\nripstream log:\n${server.log()}`);

  const read = await page.locator("#read tbody tr").evaluateAll((rows) =>
    rows.map((tr) => ({
      seq: tr.querySelector(".seq").textContent,
      partitionKey: tr.querySelector(".key").textContent,
      data: tr.querySelector(".data").textContent,
    })),
  );
  assert.deepEqual(
    read.map(({ partitionKey, data }) => ({ partitionKey, data })),
    records,
    "the records read back, in order, are the ones put",
  );
  const seqs = read.map((r) => BigInt(r.seq));
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `sequence numbers increase: ${seqs}`);

  const calls = await page.locator("#calls li").evaluateAll((items) => items.map((li) => ({ ...li.dataset })));
  const operations = calls.map((c) => c.operation);
  for (const op of ["CreateStream", "DescribeStreamSummary", "PutRecord", "PutRecords", "GetShardIterator", "GetRecords"]) {
    assert.ok(operations.includes(op), `${op} was called: ${operations}`);
  }
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  for (const c of calls) {
    // $metadata.requestId is x-amzn-RequestId and extendedRequestId is
    // x-amz-id-2: the page can read them only through Expose-Headers.
    assert.match(c.requestId, uuid, `${c.operation}: x-amzn-RequestId is visible to the page`);
    assert.ok(c.extendedRequestId.length > 0, `${c.operation}: x-amz-id-2 is visible to the page`);
  }
  const ids = calls.map((c) => c.requestId);
  assert.equal(new Set(ids).size, ids.length, "every call has its own request id");
  const missing = calls.find((c) => c.operation === "DescribeStreamSummary (missing)");
  assert.equal(missing?.error, "ResourceNotFoundException", "an AWS error reaches the page with its type");
  assert.equal(missing.status, "400");
  assert.equal(allowedConsoleErrors.length, 1, "only the deliberate error call logged a failed load");

  assert.deepEqual(problems, [], "no page errors, console errors or failed requests");

  // Every API call was a cross-origin POST, and Chromium preflighted it
  // (the SDK's authorization and x-amz-* headers are not CORS-safelisted):
  // an OPTIONS carrying the page's Origin, answered 200 with the headers
  // the POST needs. The preflight cache (Access-Control-Max-Age) lets later
  // calls go without one; the first call cannot.
  const pageOrigin = new URL(pageServer.url).origin;
  const endpointOrigin = new URL(server.url).origin;
  const toServer = sent.filter((e) => new URL(e.request.url).origin === endpointOrigin);
  const posts = toServer.filter((e) => e.request.method === "POST");
  const preflights = toServer.filter((e) => e.initiator?.type === "preflight");
  assert.ok(posts.length >= calls.length, `${posts.length} POSTs seen for ${calls.length} calls`);
  assert.ok(preflights.length >= 1, "Chromium sent a CORS preflight");
  assert.equal(preflights[0].initiator.requestId, posts[0].requestId, "the first call was preflighted");
  for (const p of preflights) {
    const headers = lowerKeys(p.request.headers);
    assert.equal(p.request.method, "OPTIONS");
    assert.equal(headers.origin, pageOrigin);
    assert.equal(headers["access-control-request-method"], "POST");
    const response = responses.get(p.requestId);
    assert.equal(response?.status, 200, "the preflight is answered 200");
    const allowed = lowerKeys(response.headers);
    assert.equal(allowed["access-control-allow-origin"], "*");
    assert.equal(allowed["access-control-allow-methods"], "POST");
    assert.equal(allowed["access-control-allow-headers"], headers["access-control-request-headers"]);
    for (const h of ["authorization", "x-amz-target", "x-amz-date"]) {
      assert.ok(allowed["access-control-allow-headers"].split(",").includes(h), `preflight allows ${h}`);
    }
  }
  for (const post of posts) {
    const headers = lowerKeys(responses.get(post.requestId)?.headers ?? {});
    assert.equal(headers["access-control-allow-origin"], "*", "every API response allows the page's origin");
    assert.match(headers["access-control-expose-headers"] ?? "", /x-amzn-RequestId/i);
  }
  // Playwright's own request events never show the preflight (Chromium's
  // network service sends it on the page's behalf): only the DevTools
  // protocol above does.
  assert.ok(!playwrightRequests.some((r) => r.startsWith("OPTIONS ")));
  assert.deepEqual(pageServer.served, ["GET /", "GET /app.js"], "the page origin served only the page");
  console.log(
    `${calls.length} SDK calls from ${pageOrigin} to ${endpointOrigin}: ${posts.length} POSTs, ` +
      `${preflights.length} preflight(s), ${read.length} records read back`,
  );
});

function lowerKeys(headers) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
