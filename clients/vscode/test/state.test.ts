// The extension's state logic (state.ts) against a real lokid: the tree and status bar
// follow the queue live, notices for breakers and dead letters, DLQ retry/delete, signals.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { LokidClient, LokidError } from "../src/client";
import { Notice, ProjectState, taskLabel } from "../src/state";
import { cleanup, Lokid, project, waitFor } from "./helpers";

let root: string;
let lokid: Lokid;

before(async () => {
  root = Lokid.tmp();
  // No engine there: run.start must answer `unavailable`, quickly.
  lokid = await new Lokid(root, { DOCKER_HOST: `unix://${root}/no-docker.sock` }).start();
});

after(() => {
  lokid.kill();
  cleanup(root);
});

test("the model follows the project live and draws a tree and a status bar", async () => {
  const p = project(root, "live");
  const c = new LokidClient({ socketPath: lokid.socket });
  const agent = new LokidClient({ socketPath: lokid.socket });
  const state = new ProjectState(c, p);
  const notices: Notice[] = [];
  state.on("notice", (n: Notice) => notices.push(n));
  try {
    assert.equal(state.statusText(), "$(debug-disconnect) Loki: offline");
    state.start();
    await waitFor("first refresh", () => state.tasks !== null);
    assert.equal(state.statusText(), "$(rocket) Loki: idle · 0 pending · 0 running");
    assert.deepEqual(
      state.roots().map((r) => r.kind === "state" && `${r.state}:${r.count}`),
      ["pending:0", "in-progress:0", "completed:0", "dead-letter:0", "cancelled:0"],
    );

    await agent.request("queue.enqueue", { project: p, task: { id: "t1", type: "eng", payload: { goal: "ship" } } });
    await waitFor("task in the tree", () => state.tasks?.pending.some((t) => t.id === "t1"));
    const pending = state.roots()[0];
    assert.deepEqual(state.children(pending).map((n) => n.kind === "task" && taskLabel(n.task)), ["t1  eng  p5  ship"]);
    await waitFor("status bar counts", () => state.statusText() === "$(rocket) Loki: idle · 1 pending · 0 running");

    await agent.request("queue.claim", { project: p, agent: "a1", capabilities: ["eng"] });
    await waitFor("in progress", () => state.tasks?.["in-progress"].some((t) => t.claimedBy === "a1"));
    assert.equal(state.statusText(), "$(rocket) Loki: idle · 0 pending · 1 running");

    // A dead letter: notice, in the dlq, retry puts it back; delete removes it.
    await agent.request("queue.enqueue", { project: p, task: { id: "d1", type: "qa", maxRetries: 1, payload: { n: 1 } } });
    await agent.request("queue.claim", { project: p, agent: "a2", capabilities: ["qa"] });
    await agent.request("queue.fail", { project: p, id: "d1", agent: "a2", error: "boom" });
    await waitFor("dead-letter notice", () => notices.find((n) => n.message === "Loki: task d1 (qa) dead-lettered: boom"));
    await waitFor("dlq", () => state.dlq.some((t) => t.id === "d1"));
    assert.ok(state.tasks?.["dead-letter"].some((t) => t.id === "d1"));
    assert.equal(await state.dlqRetry("d1"), "task d1 is pending again");
    await waitFor("retried", () => state.dlq.length === 0 && state.tasks?.pending.some((t) => t.id === "d1"));
    await agent.request("queue.claim", { project: p, agent: "a2", capabilities: ["qa"] });
    await agent.request("queue.fail", { project: p, id: "d1", agent: "a2", error: "boom again" });
    await waitFor("dead again", () => state.dlq.some((t) => t.id === "d1"));
    assert.equal(await state.dlqDelete("d1"), "task d1 deleted");
    await waitFor("deleted", () => state.dlq.length === 0);
    await assert.rejects(state.dlqDelete("d1"), (e: LokidError) => e.code === "not_found");
    await assert.rejects(state.dlqRetry("t1"), (e: LokidError) => e.code === "conflict");

    // A breaker opens: notice and a marker in the status bar.
    await agent.request("breaker.trip", { project: p, type: "ops", reason: "by test" });
    await waitFor("breaker notice", () => notices.find((n) => n.message === "Loki: breaker ops opened (forced: by test)"));
    await waitFor("status bar marker", () => state.statusText().endsWith("· $(warning) ops"));
    assert.ok(state.statusLines().some((l) => l.includes("ops open")));

    // A run cannot start without an engine: the error says so.
    await assert.rejects(state.startRun(), (e: LokidError) => e.code === "unavailable");

    // Pause, resume and stop through signal.* when this lokid serves them.
    if (c.capabilities.has("signal.pause")) {
      assert.equal(await state.pause(), "live paused (.loki/PAUSE written)");
      assert.ok(fs.existsSync(path.join(p, ".loki", "PAUSE")));
      await waitFor("paused", () => state.statusText().startsWith("$(rocket) Loki: paused"));
      await state.resume();
      assert.ok(!fs.existsSync(path.join(p, ".loki", "PAUSE")));
      await state.stopRun();
      assert.ok(fs.existsSync(path.join(p, ".loki", "STOP")));
      await waitFor("stopping", () => state.statusText().startsWith("$(rocket) Loki: stopping"));
    } else {
      await assert.rejects(state.pause(), (e: LokidError) => e.code === "method_not_found");
    }
  } finally {
    state.stop();
    c.close();
    agent.close();
  }
});

test("the event log starts with the project's recent events", async () => {
  const p = project(root, "recent");
  const c = new LokidClient({ socketPath: lokid.socket });
  try {
    await c.request("queue.enqueue", { project: p, task: { id: "early", type: "eng", payload: { n: 1 } } });
    const state = new ProjectState(c, p);
    state.start();
    await waitFor("first refresh", () => state.tasks !== null);
    assert.ok(c.capabilities.has("project.status"), "lokid serves project.status (issue 6)");
    assert.ok(state.lastEvents.some((e) => e.topic === "queue.enqueued" && e.data?.id === "early"));
    state.stop();
  } finally {
    c.close();
  }
});

test("a run.exited event is a notice", () => {
  const state = new ProjectState(new LokidClient({ socketPath: "/nonexistent" }), "/p");
  const notices: Notice[] = [];
  state.on("notice", (n: Notice) => notices.push(n));
  state.refresh = () => Promise.resolve(); // no daemon needed for this one
  state.onEvent({ sub: 1, seq: 1, topic: "run.exited", project: "/p", time: "2026-11-21T05:34:24.123Z", data: { container: "loki-abc", exitCode: 3 } });
  assert.deepEqual(notices, [{ level: "warning", message: "Loki: run loki-abc exited with code 3" }]);
});
