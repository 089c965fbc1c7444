// extension.ts loaded with a minimal stand-in for the `vscode` module against a real lokid:
// a fast check that it activates, draws the status bar and the tree, follows the queue live,
// wires the commands and disposes what it made. The real thing, in a real VS Code driven by
// a browser: test-host/host.test.ts (tests/test_vscode_host.py).
import * as fs from "node:fs";
import * as path from "node:path";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LokidClient } from "../src/client";
import { cleanup, Lokid, project, waitFor } from "./helpers";

// eslint-disable-next-line @typescript-eslint/no-var-requires
const Module = require("node:module");

const messages: string[] = [];
const commands = new Map<string, (...args: any[]) => any>();
const trees = new Map<string, any>();
const bar: { text: string; tooltip: string; command?: unknown; name?: string; shown: boolean; show(): void; dispose(): void } = {
  text: "",
  tooltip: "",
  shown: false,
  show() {
    this.shown = true;
  },
  dispose() {},
};
let folder = "/nonexistent";
let treeChanges = 0;
let emittersDisposed = 0;

const fakeVscode = {
  StatusBarAlignment: { Left: 1, Right: 2 },
  TreeItemCollapsibleState: { None: 0, Collapsed: 1, Expanded: 2 },
  EventEmitter: class {
    private listeners: ((e: unknown) => void)[] = [];
    event = (l: (e: unknown) => void) => {
      this.listeners.push(l);
      return { dispose() {} };
    };
    fire(e: unknown) {
      treeChanges++;
      for (const l of this.listeners) l(e);
    }
    dispose() {
      emittersDisposed++;
      this.listeners = [];
    }
  },
  TreeItem: class {
    id?: string;
    contextValue?: string;
    tooltip?: string;
    description?: string;
    constructor(
      readonly label: string,
      readonly collapsibleState = 0,
    ) {}
  },
  workspace: {
    get workspaceFolders() {
      return [{ uri: { scheme: "file", fsPath: folder } }];
    },
    getConfiguration: () => ({
      get: (key: string, dflt?: unknown) => (key === "socketPath" ? process.env.TEST_LOKID_SOCKET : dflt),
    }),
    onDidChangeWorkspaceFolders: () => ({ dispose() {} }),
  },
  window: {
    createStatusBarItem: () => bar,
    showInformationMessage: (m: string) => messages.push(`info: ${m}`),
    showWarningMessage: (m: string) => messages.push(`warning: ${m}`),
    showErrorMessage: (m: string) => messages.push(`error: ${m}`),
    registerTreeDataProvider: (id: string, provider: any) => {
      trees.set(id, provider);
      return { dispose() {} };
    },
  },
  commands: {
    registerCommand: (id: string, fn: (...args: any[]) => any) => {
      commands.set(id, fn);
      return { dispose() {} };
    },
    executeCommand: () => Promise.resolve(),
  },
};

const resolve = Module._resolveFilename;
Module._resolveFilename = function (request: string, ...rest: unknown[]) {
  if (request === "vscode") return "vscode";
  return resolve.call(this, request, ...rest);
};
require.cache["vscode"] = { id: "vscode", filename: "vscode", loaded: true, exports: fakeVscode } as any;

let root: string;
let lokid: Lokid;

before(async () => {
  root = Lokid.tmp();
  lokid = await new Lokid(root).start();
});

after(() => {
  lokid.kill();
  cleanup(root);
});

test("the extension activates, draws and follows lokid live", async () => {
  folder = project(root, "ext");
  fs.mkdirSync(path.join(folder, ".loki"));
  process.env.TEST_LOKID_SOCKET = lokid.socket;
  const ext = require("../src/extension");
  const subscriptions: { dispose(): void }[] = [];
  ext.activate({ subscriptions });
  const agent = new LokidClient({ socketPath: lokid.socket });
  try {
    for (const id of ["loki.startRun", "loki.stopRun", "loki.pause", "loki.resume", "loki.dlqRetry", "loki.dlqDelete"])
      assert.ok(commands.has(id), id);
    await waitFor("status bar", () => bar.text === "$(rocket) Loki: idle · 0 pending · 0 running");
    assert.ok(bar.shown);
    const tree = trees.get("lokiTasks");
    assert.deepEqual(
      tree.getChildren().map((n: any) => tree.getTreeItem(n).label),
      ["pending (0)", "in-progress (0)", "completed (0)", "dead-letter (0)", "cancelled (0)"],
    );
    const before = treeChanges;
    await agent.request("queue.enqueue", { project: folder, task: { id: "x1", type: "eng", payload: { goal: "go" } } });
    await waitFor("tree refreshed", () => treeChanges > before && tree.getChildren()[0].count === 1);
    const item = tree.getTreeItem(tree.getChildren(tree.getChildren()[0])[0]);
    assert.equal(item.label, "x1  eng  p5  go");
    assert.equal(item.contextValue, "task.pending");
    await waitFor("status bar follows", () => bar.text === "$(rocket) Loki: idle · 1 pending · 0 running");

    // A dead letter: a warning, and the tree item's retry command puts it back.
    await agent.request("queue.enqueue", { project: folder, task: { id: "x2", type: "qa", maxRetries: 1, payload: { n: 2 } } });
    await agent.request("queue.claim", { project: folder, agent: "a", capabilities: ["qa"] });
    await agent.request("queue.fail", { project: folder, id: "x2", agent: "a", error: "bad" });
    await waitFor("warning", () => messages.includes("warning: Loki: task x2 (qa) dead-lettered: bad"));
    const dead = await waitFor("dead-letter node", () => tree.getChildren(tree.getChildren()[3])[0]);
    assert.equal(tree.getTreeItem(dead).contextValue, "task.dead-letter");
    await commands.get("loki.dlqRetry")!(dead);
    await waitFor("retried", () => messages.includes("info: Loki: task x2 is pending again"));
    await waitFor("back to pending", () => tree.getChildren()[0].count === 2);
  } finally {
    agent.close();
    for (const s of subscriptions) s.dispose();
  }
  assert.equal(emittersDisposed, 1, "the tree's EventEmitter is disposed with the extension");
});
