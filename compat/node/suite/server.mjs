// Starts the real ripstream binary ($RIPSTREAM_BIN, else target/debug/ripstream)
// on an ephemeral loopback port with a temporary data directory.
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { KinesisClient } from "@aws-sdk/client-kinesis";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.RIPSTREAM_BIN ?? join(here, "..", "..", "..", "target", "debug", "ripstream");
export const REGION = "us-east-1";

const running = new Set();
// A test file that dies still takes its servers with it.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "ripstream-compat-node-"));
  const logPath = join(dir, "server.log");
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), ...extra], {
    stdio: ["ignore", "pipe", openSync(logPath, "w")],
  });
  running.add(child);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    }
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
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
  // Keep draining stdout so the server never blocks on the pipe.
  lines.on("line", () => {});
  const url = first.trim().split(/\s+/).pop() ?? "";
  if (!url.startsWith("http")) {
    const log = readFileSync(logPath, "utf8");
    await stop();
    throw new Error(`server did not start: ${JSON.stringify(first)}\n${log}`);
  }
  return { url, stop, log: () => readFileSync(logPath, "utf8") };
}

export const testCredentials = { accessKeyId: "AKIDCOMPATNODE", secretAccessKey: "secret" };

// What an application builds: an endpoint, a region and keys; the SDK's
// standard retries absorb the per-shard throttling the server enforces as AWS does.
export function kinesis(server, extra = {}) {
  return new KinesisClient({ endpoint: server.url, region: REGION, credentials: testCredentials, maxAttempts: 6, ...extra });
}

export function dynamo(server, extra = {}) {
  return new DynamoDBClient({ endpoint: server.url, region: REGION, credentials: testCredentials, maxAttempts: 6, ...extra });
}

export function uniqueName(prefix) {
  return `${prefix}-${randomBytes(5).toString("hex")}`;
}
