// The VS Code side: draws ProjectState (state.ts) as a status bar item and a tree, and
// maps commands onto it. All logic lives in state.ts and client.ts.
import * as vscode from "vscode";
import { LokidClient } from "./client";
import { ProjectState, taskLabel, TreeNode } from "./state";

class TasksTree implements vscode.TreeDataProvider<TreeNode> {
  private readonly emitter = new vscode.EventEmitter<TreeNode | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;

  constructor(private readonly state: ProjectState) {
    state.on("changed", () => this.emitter.fire(undefined));
  }

  getTreeItem(node: TreeNode): vscode.TreeItem {
    if (node.kind === "state") {
      const item = new vscode.TreeItem(
        `${node.state} (${node.count}${node.more ? "+" : ""})`,
        node.count ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
      );
      item.contextValue = "state";
      return item;
    }
    const item = new vscode.TreeItem(taskLabel(node.task));
    item.id = `${node.state}/${node.task.id}`;
    item.contextValue = `task.${node.state}`;
    item.tooltip = JSON.stringify(node.task, null, 2);
    return item;
  }

  getChildren(node?: TreeNode): TreeNode[] {
    return node ? this.state.children(node) : this.state.roots();
  }
}

export function activate(context: vscode.ExtensionContext): void {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder || folder.uri.scheme !== "file") return;
  const config = vscode.workspace.getConfiguration("loki");
  const client = new LokidClient({
    socketPath: config.get<string>("socketPath") || null,
    name: "vscode",
    start: config.get<string[]>("startCommand", ["lokictl", "ping"]),
  });
  const state = new ProjectState(client, folder.uri.fsPath.replace(/\/+$/, ""));

  const bar = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  bar.command = "loki.showStatus";
  const draw = () => {
    bar.text = state.statusText();
    bar.tooltip = state.statusLines().join("\n");
    bar.show();
  };
  state.on("changed", draw);
  draw();

  let lostShown = false;
  client.on("disconnected", () => {
    if (!lostShown) void vscode.window.showWarningMessage("Loki: connection to lokid lost; reconnecting");
    lostShown = true;
    draw();
  });
  client.on("reconnected", () => {
    if (lostShown) void vscode.window.showInformationMessage("Loki: reconnected to lokid");
    lostShown = false;
  });
  state.on("notice", (n: { level: string; message: string }) => {
    if (!vscode.workspace.getConfiguration("loki").get<boolean>("notifications", true)) return;
    if (n.level === "warning") void vscode.window.showWarningMessage(n.message);
    else if (n.level === "error") void vscode.window.showErrorMessage(n.message);
    else void vscode.window.showInformationMessage(n.message);
  });

  const tree = new TasksTree(state);
  const run = (what: string, fn: () => Promise<unknown>) => async () => {
    try {
      const r = await fn();
      void vscode.window.showInformationMessage(`Loki: ${what}: ${JSON.stringify(r)}`);
    } catch (e) {
      void vscode.window.showErrorMessage(`Loki: ${what} failed: ${e instanceof Error ? e.message : e}`);
    }
  };
  const taskOf = (node?: TreeNode) => (node && node.kind === "task" ? node.task.id : undefined);
  context.subscriptions.push(
    bar,
    vscode.window.registerTreeDataProvider("lokiTasks", tree),
    vscode.commands.registerCommand("loki.startRun", run("start run", () => state.startRun())),
    vscode.commands.registerCommand("loki.stopRun", run("stop", () => state.stopRun())),
    vscode.commands.registerCommand("loki.pause", run("pause", () => state.pause())),
    vscode.commands.registerCommand("loki.resume", run("resume", () => state.resume())),
    vscode.commands.registerCommand("loki.refresh", () => state.refresh()),
    vscode.commands.registerCommand("loki.showStatus", async () => {
      await state.refresh();
      void vscode.window.showInformationMessage(state.statusLines().join(" — "));
    }),
    vscode.commands.registerCommand("loki.dlqRetry", (node?: TreeNode) => {
      const id = taskOf(node);
      if (id) return run(`retry ${id}`, () => state.dlqRetry(id))();
    }),
    vscode.commands.registerCommand("loki.dlqDelete", (node?: TreeNode) => {
      const id = taskOf(node);
      if (id) return run(`delete ${id}`, () => state.dlqDelete(id))();
    }),
    { dispose: () => (state.stop(), client.close()) },
  );
  state.start();
}

export function deactivate(): void {}
