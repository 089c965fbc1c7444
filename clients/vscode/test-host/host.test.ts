// The extension in a real VS Code (code-server) driven by a real browser, against a real
// lokid: what a user sees and does. See workbench.ts for how it is run.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { Browser } from "playwright-core";
import { LokidClient } from "../src/client";
import { cleanup, Lokid, project } from "../test/helpers";
import { CodeServer, HangUp, launchBrowser, lokictl, recordingLokictl, waitFor, Workbench } from "./workbench";

let browser: Browser;
const roots: string[] = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const socket of sockets) await lokictl(socket, "/", "daemon", "stop").catch(() => undefined);
  for (const r of roots) cleanup(r);
});

const sockets: string[] = [];

/** A scratch folder, a code-server there, and lokid's socket path (whatever answers there
 * at the end, even a lokid the extension should not have started, is stopped). */
async function setUp(settings: (root: string) => Record<string, unknown>, opts: { path?: string } = {}) {
  const root = Lokid.tmp();
  roots.push(root);
  const socket = path.join(root, "run", "lokid.sock");
  sockets.push(socket);
  const server = await new CodeServer(root).start({ settings: settings(root), path: opts.path });
  return { root, server, socket };
}

function lokiProject(root: string, name: string): string {
  const p = project(root, name);
  fs.mkdirSync(path.join(p, ".loki"));
  return p;
}

/** Run `body`; on failure add what the window showed and what the servers said. */
async function showing<T>(wb: Workbench | null, logs: () => string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    if (wb) {
      await wb.screenshot("failed").catch(() => undefined);
      const bar = await wb.statusText().catch(() => "?");
      (e as Error).message += `\nstatus bar: ${bar}\n${logs().slice(-4000)}`;
    }
    throw e;
  }
}

test("a plain folder: nothing activates, no .loki/ is made, lokid is not started", async () => {
  const { root, server, socket } = await setUp((dir) => ({
    "loki.socketPath": path.join(dir, "run", "lokid.sock"),
    "loki.startCommand": [recordingLokictl(path.join(dir, "bin", "lokictl"), path.join(dir, "lokictl-runs")), "ping"],
  }));
  const marker = path.join(root, "lokictl-runs");
  const plain = project(root, "plain");
  fs.writeFileSync(path.join(plain, "notes.txt"), "no Loki here\n");
  let wb: Workbench | null = null;
  try {
    wb = await Workbench.open(browser, server.folderUrl(plain), "plain");
    const w = wb;
    await showing(w, () => server.log, async () => {
      await w.waitRow("notes.txt");
      // Long after start-up: a Loki command, the user's own, says there is no project here.
      await w.command("Loki: Show Status");
      await w.toast("no folder of this workspace holds a .loki/ folder");
      assert.equal(fs.existsSync(path.join(plain, ".loki")), false, ".loki/ was created");
      assert.equal(fs.existsSync(marker), false, "the start command ran");
      assert.equal(fs.existsSync(socket), false, "lokid was started");
      assert.equal(await w.statusItem("Loki").count(), 0, await w.statusText());
      assert.equal(await w.count('.activitybar [aria-label^="Loki Mode"]'), 0);
      await w.screenshot("window");
    });
  } finally {
    await wb?.close();
    await server.stop();
  }
});

test("a .loki folder: status bar and tree follow lokid live; pause, resume, dead letters; stop and restart", async () => {
  const { root, server, socket } = await setUp((dir) => ({
    "loki.socketPath": path.join(dir, "run", "lokid.sock"),
    "loki.startCommand": [recordingLokictl(path.join(dir, "bin", "lokictl"), path.join(dir, "lokictl-runs")), "ping"],
  }));
  const marker = path.join(root, "lokictl-runs");
  const noEngine = { DOCKER_HOST: `unix://${root}/no-docker.sock` };
  let lokid = await new Lokid(root, noEngine).start();
  assert.equal(lokid.socket, socket);
  const p = lokiProject(root, "proj");
  const agent = new LokidClient({ socketPath: socket });
  let wb: Workbench | null = null;
  try {
    wb = await Workbench.open(browser, server.folderUrl(p), "proj");
    const w = wb;
    await showing(w, () => server.log + lokid.log, async () => {
      await w.waitStatus("Loki: idle · 0 pending · 0 running", 90_000);
      await w.openView();
      await w.waitRow("pending (0)");
      await w.waitRow("dead-letter (0)");

      // Someone else adds a task: the status bar and the tree follow.
      await lokictl(socket, p, "queue", "add", "--id", "t1", "--payload", '{"goal":"ship it"}', "eng");
      await w.waitStatus("Loki: idle · 1 pending · 0 running");
      await w.waitRow("pending (1)");
      await w.waitRow("t1  eng  p5  ship it");

      // Pause and resume, said in words; the files are what Loki Mode reads.
      await w.command("Loki: Pause");
      await w.toast("Loki: proj paused (.loki/PAUSE written)");
      await w.waitStatus("Loki: paused · 1 pending");
      assert.ok(fs.existsSync(path.join(p, ".loki", "PAUSE")));
      await w.command("Loki: Resume");
      await w.toast("Loki: proj resumed");
      await w.waitStatus("Loki: idle · 1 pending");
      assert.ok(!fs.existsSync(path.join(p, ".loki", "PAUSE")));

      // A dead letter: a warning, then retry and delete from the tree's context menu.
      const deadLetter = async (error: string) => {
        await agent.request("queue.claim", { project: p, agent: "a2", capabilities: ["qa"] });
        await agent.request("queue.fail", { project: p, id: "d1", agent: "a2", error });
        await w.waitRow("dead-letter (1)");
        await w.waitRow("in-progress (0)");
        return w.waitRow("d1  qa  p5");
      };
      await agent.request("queue.enqueue", { project: p, task: { id: "d1", type: "qa", maxRetries: 1, payload: { n: 1 } } });
      let row = await deadLetter("boom");
      await w.toast("Loki: task d1 (qa) dead-lettered: boom");
      await w.screenshot("status-bar", ".part.statusbar");
      await w.screenshot("view", ".part.sidebar");
      await w.contextMenu(row, "Loki: Retry Dead-Lettered Task");
      await w.toast("Loki: task d1 is pending again");
      await w.waitRow("dead-letter (0)");
      await w.waitStatus("Loki: idle · 2 pending");
      row = await deadLetter("boom again");
      await w.contextMenu(row, "Loki: Delete Dead-Lettered Task");
      await w.toast("Loki: task d1 deleted");
      await w.waitRow("dead-letter (0)");
      assert.equal(await w.row("d1  qa").count(), 0);

      // lokid stopped: offline, and it stays stopped while the extension tries again.
      await lokictl(socket, p, "daemon", "stop");
      await waitFor("lokid to exit", () => lokid.proc?.exitCode !== null, 20_000);
      await w.waitStatus("Loki: offline");
      const hangup = await HangUp.listen(socket);
      try {
        await waitFor("two background reconnect attempts", () => hangup.accepts >= 2, 20_000);
        assert.equal(fs.existsSync(marker), false, "a background reconnect ran the start command");
        await w.waitStatus("Loki: offline");
      } finally {
        await hangup.close();
      }
      await w.screenshot("offline", ".part.statusbar");

      // Restarted: followed again, without a command.
      lokid = await new Lokid(root, noEngine).start();
      await w.waitStatus("Loki: idle · 1 pending · 0 running");
      await w.toast("Loki: reconnected to lokid");
      assert.equal(fs.existsSync(marker), false, "the start command ran");
    });
  } finally {
    agent.close();
    await wb?.close();
    await server.stop();
    lokid.kill();
  }
});

test("a multi-root workspace: every folder with .loki/ is followed, the others are left alone", async () => {
  const { root, server, socket } = await setUp((dir) => ({
    "loki.socketPath": path.join(dir, "run", "lokid.sock"),
    "loki.startCommand": [],
  }));
  const lokid = await new Lokid(root).start();
  const a = lokiProject(root, "alpha");
  const b = project(root, "beta");
  fs.writeFileSync(path.join(b, "notes.txt"), "no Loki here\n");
  const c = lokiProject(root, "gamma");
  const file = path.join(root, "three.code-workspace");
  fs.writeFileSync(file, JSON.stringify({ folders: [{ path: a }, { path: b }, { path: c }] }));
  let wb: Workbench | null = null;
  try {
    wb = await Workbench.open(browser, server.workspaceUrl(file), "multi-root");
    const w = wb;
    await showing(w, () => server.log + lokid.log, async () => {
      await w.waitStatus("Loki alpha: idle · 0 pending", 90_000);
      await w.waitStatus("Loki gamma: idle · 0 pending");
      await w.openView();
      await w.waitRow("alpha");
      await w.waitRow("gamma");
      await lokictl(socket, c, "queue", "add", "--id", "g1", "--payload", '{"goal":"in gamma"}', "eng");
      await w.waitStatus("Loki gamma: idle · 1 pending");
      await w.waitRow("g1  eng  p5  in gamma");
      await w.waitStatus("Loki alpha: idle · 0 pending");
      assert.equal(await w.statusItem("beta").count(), 0);
      assert.equal(fs.existsSync(path.join(b, ".loki")), false, ".loki/ was created in a plain folder");
      const known = (await lokid_status(socket)).projects as string[];
      assert.deepEqual([...known].sort(), [a, c].sort());
      await w.screenshot("window");
    });
  } finally {
    await wb?.close();
    await server.stop();
    lokid.kill();
  }
});

async function lokid_status(socket: string): Promise<any> {
  const c = new LokidClient({ socketPath: socket });
  try {
    return await c.request("daemon.status");
  } finally {
    c.close();
  }
}

test("lokictl found where users install it; never started at activation; the error names the setting", async () => {
  // The extension host's PATH has no lokictl; the default start command is used.
  const { root, server, socket } = await setUp(
    (dir) => ({ "loki.socketPath": path.join(dir, "run", "lokid.sock") }),
    { path: "/usr/local/bin:/usr/bin:/bin" },
  );
  const marker = path.join(root, "lokictl-runs");
  const local = path.join(server.home, ".local", "bin", "lokictl");
  recordingLokictl(local, marker);
  const p = lokiProject(root, "proj");
  let wb: Workbench | null = null;
  let hangup: HangUp | null = await HangUp.listen(socket);
  try {
    wb = await Workbench.open(browser, server.folderUrl(p), "lokictl");
    const w = wb;
    await showing(w, () => server.log, async () => {
      // Activation tries in the background only: attempts, no start.
      await w.waitStatus("Loki: offline", 90_000);
      await waitFor("two background connect attempts", () => hangup!.accepts >= 2, 20_000);
      assert.equal(fs.existsSync(marker), false, "activation ran the start command");
      await hangup!.close();
      hangup = null;

      // A command starts it, with the lokictl in ~/.local/bin.
      await w.command("Loki: Refresh");
      await w.waitStatus("Loki: idle · 0 pending · 0 running", 60_000);
      assert.equal(fs.readFileSync(marker, "utf8").trim(), "ping");

      // No lokictl anywhere: the error says which setting to set.
      fs.unlinkSync(local);
      await lokictl(socket, p, "daemon", "stop");
      await w.waitStatus("Loki: offline");
      await w.command("Loki: Refresh");
      const said = await w.toast("was not found", "not-found");
      assert.match(said, /lokictl was not found \(looked on PATH, in ~\/\.local\/bin and pipx's folders\)/);
      assert.match(said, /Set "loki\.startCommand" to lokictl's full path/);
    });
  } finally {
    await hangup?.close();
    await wb?.close();
    await server.stop();
  }
});
