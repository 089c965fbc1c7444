// The client module against a real lokid: requests, out-of-order replies, errors,
// cancellation, events, and reconnect with resubscription after a restart.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { defaultSocketPath, LokidClient, LokidError } from "../src/client";
import { findProgram, searchPath } from "../src/locate";
import { LokidEvent } from "../src/wire";
import { cleanup, Lokid, project, PYTHON, waitFor } from "./helpers";

let root: string;
let lokid: Lokid;

before(async () => {
  root = Lokid.tmp();
  lokid = await new Lokid(root).start();
});

after(async () => {
  lokid.kill();
  cleanup(root);
});

test("socket path resolution matches lokictl", () => {
  assert.equal(defaultSocketPath("/x.sock", { LOKID_SOCKET: "/y" }, "linux", 7), "/x.sock");
  assert.equal(defaultSocketPath(null, { LOKID_SOCKET: "/y", XDG_RUNTIME_DIR: "/r" }, "linux", 7), "/y");
  assert.equal(defaultSocketPath(null, { XDG_RUNTIME_DIR: "/run/user/7" }, "linux", 7), "/run/user/7/lokid/lokid.sock");
  assert.equal(defaultSocketPath(null, {}, "linux", 7), "/tmp/lokid-7/lokid.sock");
  assert.match(defaultSocketPath(null, { XDG_RUNTIME_DIR: "/r" }, "darwin", 7), /Library\/Application Support\/lokid\/lokid.sock$/);
});

test("hello on connect, capabilities, concurrent requests answered out of order", async () => {
  const c = new LokidClient({ socketPath: lokid.socket });
  try {
    const slow = c.request("debug.sleep", { seconds: 0.3 });
    const order: string[] = [];
    slow.then(() => order.push("slow"));
    const ping = await c.request("ping");
    order.push("ping");
    assert.match(ping.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(c.server?.server, "lokid");
    assert.ok(c.capabilities.has("queue.enqueue"));
    await slow;
    assert.deepEqual(order, ["ping", "slow"]);
  } finally {
    c.close();
  }
});

test("error replies reject with the code; a cancelled request answers cancelled", async () => {
  const c = new LokidClient({ socketPath: lokid.socket });
  const p = project(root, "errs");
  try {
    await assert.rejects(c.request("queue.get", { project: p, id: "nope" }), (e: LokidError) => e.code === "not_found");
    await assert.rejects(c.request("ping", { bogus: 1 }), (e: LokidError) => e.code === "invalid_params");
    await assert.rejects(c.request("no.such"), (e: LokidError) => e.code === "method_not_found");
    const ac = new AbortController();
    const sleeping = c.request("debug.sleep", { seconds: 30 }, { signal: ac.signal });
    setImmediate(() => ac.abort());
    await assert.rejects(sleeping, (e: LokidError) => e.code === "cancelled");
  } finally {
    c.close();
  }
});

test("no daemon: requests reject with unavailable at once", async () => {
  const c = new LokidClient({ socketPath: path.join(root, "nobody.sock") });
  await assert.rejects(c.request("ping"), (e: LokidError) => e.code === "unavailable" && /not running/.test(e.message));
  c.close();
});

test("no daemon: a failing start command is reported with its last words", async () => {
  const start = ["sh", "-c", "echo cannot start it here >&2; exit 3"];
  const c = new LokidClient({ socketPath: path.join(root, "nobody.sock"), start });
  await assert.rejects(c.connect(), (e: LokidError) => {
    assert.equal(e.code, "unavailable");
    assert.match(e.message, /lokid is not running on .*nobody\.sock; sh exited 3: cannot start it here$/);
    return true;
  });
  c.close();
});

test("no daemon: the start command starts lokid and the request gets its answer", async () => {
  const socket = path.join(root, "started", "lokid.sock");
  const start = [PYTHON, "-m", "lokictl", "ping"]; // lokictl spawns lokid on LOKID_SOCKET
  const stateHome = process.env.XDG_STATE_HOME;
  process.env.XDG_STATE_HOME = path.join(root, "started-state"); // where that lokid logs
  const c = new LokidClient({ socketPath: socket, start });
  try {
    await c.connect();
    const [a, b] = await Promise.all([c.request("ping"), c.request("daemon.status")]);
    assert.match(a.time, /^\d{4}-/);
    assert.equal(typeof b.pid, "number");
    await c.request("daemon.shutdown");
  } finally {
    c.close();
    if (stateHome === undefined) delete process.env.XDG_STATE_HOME;
    else process.env.XDG_STATE_HOME = stateHome;
  }
});

test("no daemon: a start command that is not there says so, naming the program", async () => {
  const c = new LokidClient({ socketPath: path.join(root, "nobody.sock"), start: ["no-such-lokictl-here", "ping"] });
  await assert.rejects(c.connect(), (e: LokidError) => {
    assert.equal(e.code, "unavailable");
    assert.match(e.message, /no-such-lokictl-here was not found \(looked on PATH, in ~\/\.local\/bin and pipx's folders\)$/);
    assert.deepEqual(e.data, { startNotFound: "no-such-lokictl-here" });
    return true;
  });
  c.close();
});

test("requests and subscriptions never run the start command", async () => {
  const marker = path.join(root, "started-by-request");
  const c = new LokidClient({ socketPath: path.join(root, "nobody.sock"), start: ["touch", marker] });
  await assert.rejects(c.request("ping"), (e: LokidError) => e.code === "unavailable");
  c.subscribe(["*"], null, () => undefined);
  await assert.rejects(c.connect({ start: false }), (e: LokidError) => e.code === "unavailable");
  assert.equal(fs.existsSync(marker), false);
  c.close();
});

test("a subscription waits in the background for a lokid started later", async () => {
  const later = new Lokid(path.join(root, "later"));
  const c = new LokidClient({ socketPath: later.socket, backoffMinMs: 5, backoffMaxMs: 20 });
  let subscribed = 0;
  try {
    c.subscribe(["*"], null, () => undefined, () => subscribed++);
    await waitFor("a failed first attempt", () => c.state === "reconnecting");
    await later.start();
    await waitFor("subscribed once lokid is there", () => subscribed === 1);
  } finally {
    c.close();
    later.kill();
  }
});

test("the start program is found on PATH, then in ~/.local/bin and pipx's folders", () => {
  const home = path.join(root, "home");
  const bins = ["path-bin", ".local/bin", ".local/share/pipx/venvs/lokid/bin"].map((d) => path.join(home, d));
  for (const d of bins) fs.mkdirSync(d, { recursive: true });
  const env = { PATH: bins[0] };
  assert.deepEqual(searchPath(env, home).slice(0, 3), [bins[0], bins[1], path.join(home, ".local/share/pipx/venvs/lokid/bin")]);
  assert.equal(findProgram("lokictl", env, home), null);
  const put = (dir: string, mode = 0o755) => {
    const file = path.join(dir, "lokictl");
    fs.writeFileSync(file, "#!/bin/sh\n", { mode });
    return file;
  };
  const inPipx = put(bins[2]);
  assert.equal(findProgram("lokictl", env, home), inPipx);
  const inLocal = put(bins[1]);
  assert.equal(findProgram("lokictl", env, home), inLocal);
  put(bins[0], 0o644); // not runnable: passed over
  assert.equal(findProgram("lokictl", env, home), inLocal);
  fs.chmodSync(path.join(bins[0], "lokictl"), 0o755);
  assert.equal(findProgram("lokictl", env, home), path.join(bins[0], "lokictl"));
  assert.equal(findProgram(inPipx, {}, home), inPipx, "a path is taken as given");
});

test("background reconnects never run the start command", async () => {
  // A stand-in that hangs up on every connection: each reconnect attempt is one accept.
  const socket = path.join(root, "hangup.sock");
  let accepts = 0;
  const server = net.createServer((conn) => {
    accepts++;
    conn.destroy();
  });
  await new Promise<void>((r) => server.listen(socket, r));
  const marker = path.join(root, "started-by-reconnect");
  const c = new LokidClient({ socketPath: lokid.socket, backoffMinMs: 5, backoffMaxMs: 10, start: ["touch", marker] });
  try {
    await c.connect();
    await c.connect(); // asked again while connected (as every user command does)
    await lokid.stop();
    fs.renameSync(socket, lokid.socket); // lokid's path now leads to the stand-in
    await waitFor("five reconnect attempts", () => accepts >= 5);
    assert.equal(fs.existsSync(marker), false);
  } finally {
    c.close();
    server.close();
    lokid = await new Lokid(root).start();
  }
});

test("events arrive for a subscription, and again after lokid restarts", async () => {
  const p = project(root, "events");
  const c = new LokidClient({ socketPath: lokid.socket, backoffMinMs: 20, backoffMaxMs: 200 });
  const other = new LokidClient({ socketPath: lokid.socket });
  const seen: LokidEvent[] = [];
  let subscribed = 0;
  const states: string[] = [];
  c.on("disconnected", () => states.push("disconnected"));
  c.on("reconnected", () => states.push("reconnected"));
  try {
    c.subscribe(["queue.*"], p, (ev) => seen.push(ev), () => subscribed++);
    await waitFor("subscribed", () => subscribed === 1);
    await other.request("queue.enqueue", { project: p, task: { id: "a", type: "eng", payload: { n: 1 } } });
    const ev = await waitFor("queue.enqueued", () => seen.find((e) => e.topic === "queue.enqueued"));
    assert.equal(ev.project, p);
    assert.equal(ev.seq, 1);
    assert.deepEqual(ev.data, { id: "a", type: "eng", priority: 5 });

    other.close();
    await lokid.stop();
    await waitFor("disconnected", () => states.includes("disconnected"));
    await assert.rejects(c.request("ping"), (e: LokidError) => e.code === "unavailable");
    lokid = await new Lokid(root).start();
    await waitFor("reconnected and resubscribed", () => states.includes("reconnected") && subscribed === 2, 15000);
    assert.deepEqual(states, ["disconnected", "reconnected"]);
    const again = new LokidClient({ socketPath: lokid.socket });
    await again.request("queue.enqueue", { project: p, task: { id: "b", type: "eng", payload: { n: 2 } } });
    again.close();
    const evB = await waitFor("event after restart", () => seen.find((e) => e.data?.id === "b"));
    assert.equal(evB.seq, 1, "a fresh subscription counts from 1");
  } finally {
    c.close();
    other.close();
  }
});
