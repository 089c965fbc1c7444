// Start Run's host dashboard (src/dashboard.ts) against the stand-in `loki` CLI of the Python
// tests (tests/fake_loki: Loki Mode's `dashboard start|url|stop`, their state files, a real
// server on the port, every call recorded): started, reused, the next port when the first is
// taken, a hung `loki` stopped, and the hint without one.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { describeDashboard, ensureDashboard, HINT, pickPort } from "../src/dashboard";
import { cleanup, Lokid, REPO } from "./helpers";

const FAKES = path.join(REPO, "tests", "fake_loki");
const root = Lokid.tmp();
const withoutLoki = (process.env.PATH ?? "")
  .split(path.delimiter)
  .filter((d) => d && !fs.existsSync(path.join(d, "loki")))
  .join(path.delimiter);

function listen(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port }, () => resolve(server));
  });
}

/** A port p with p and p + 1 free. */
async function freePair(): Promise<number> {
  for (;;) {
    const probe = await listen(0);
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    try {
      const next = await listen(port + 1);
      await new Promise((r) => next.close(r));
      return port;
    } catch {
      /* taken: another pair */
    }
  }
}

function calls(home: string): string[][] {
  const log = path.join(home, ".loki", "fake-loki-calls.jsonl");
  if (!fs.existsSync(log)) return [];
  return fs.readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l).argv);
}

function stopDashboard(home: string): void {
  try {
    process.kill(Number(fs.readFileSync(path.join(home, ".loki", "dashboard", "dashboard.pid"), "utf8")), "SIGTERM");
  } catch {
    /* none */
  }
}

after(() => cleanup(root));

test("the host dashboard is started, reused, on the next port when taken; a hung loki is stopped", async () => {
  const home = path.join(root, "home");
  fs.mkdirSync(home);
  const port = await freePair();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: home,
    PATH: `${FAKES}${path.delimiter}${withoutLoki}`,
    LOKI_DASHBOARD_PORT: String(port),
  };
  const holder = await listen(port); // something else holds the first port
  try {
    const url = `http://127.0.0.1:${port + 1}`;
    assert.equal(await pickPort(env), port + 1);
    const first = await ensureDashboard({ env });
    assert.deepEqual(first, { state: "started", url });
    const again = await ensureDashboard({ env });
    assert.deepEqual(again, { state: "running", url });
    assert.equal(describeDashboard(again), `Loki Mode's dashboard ${url} (already running) lists this run`);
    const health = await fetch(`${url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(
      calls(home).filter((c) => c[1] === "start"),
      [["dashboard", "start", "--port", String(port + 1)]],
    );

    execFileSync(path.join(FAKES, "loki"), ["dashboard", "stop"], { env });
    const hung = await ensureDashboard({ env: { ...env, LOKI_FAKE_HANG: "1" }, timeoutMs: 1000 });
    assert.equal(hung.state, "failed");
    assert.match(hung.message!, /^`loki dashboard start --port \d+` did not finish in 1 s and was stopped$/);
  } finally {
    holder.close();
    stopDashboard(home);
  }
});

test("without loki on PATH: the hint, and nothing run", async () => {
  const home = path.join(root, "bare");
  fs.mkdirSync(home);
  const d = await ensureDashboard({ env: { ...process.env, HOME: home, PATH: withoutLoki } });
  assert.deepEqual(d, { state: "absent", message: HINT });
  assert.equal(describeDashboard(d), HINT);
  assert.deepEqual(calls(home), []);
});
