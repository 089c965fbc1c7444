// The VS Code side: draws each project's state (state.ts, projects.ts) as a status bar item
// and a tree, and maps commands onto it. All logic lives in the modules without VS Code.
//
// It activates where a workspace folder holds `.loki/` (workspaceContains) or when a Loki
// command is run; it follows only folders that hold `.loki/`, so it never creates one, and
// it starts lokid only when a command asks for something (connect()), never by itself.
import * as vscode from "vscode";
import { LokidClient, LokidError } from "./client";
import { describeDashboard, ensureDashboard } from "./dashboard";
import { Projects } from "./projects";
import { Notice, ProjectState, taskLabel, TreeNode } from "./state";

const START_SETTING = "loki.startCommand";

class TasksTree implements vscode.TreeDataProvider<TreeNode>, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<TreeNode | undefined>();
  readonly onDidChangeTreeData = this.emitter.event;

  constructor(private readonly projects: Projects) {}

  refresh(): void {
    this.emitter.fire(undefined);
  }

  getTreeItem(node: TreeNode): vscode.TreeItem {
    if (node.kind === "project") {
      const state = this.projects.get(node.project);
      const item = new vscode.TreeItem(state?.name ?? node.project, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `project:${node.project}`;
      item.description = state?.summary();
      item.tooltip = node.project;
      item.contextValue = "project";
      return item;
    }
    if (node.kind === "state") {
      const item = new vscode.TreeItem(
        `${node.state} (${node.count}${node.more ? "+" : ""})`,
        node.count ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
      );
      item.contextValue = "state";
      return item;
    }
    const item = new vscode.TreeItem(taskLabel(node.task));
    item.id = `${node.project}/${node.state}/${node.task.id}`;
    item.contextValue = `task.${node.state}`;
    item.tooltip = JSON.stringify(node.task, null, 2);
    return item;
  }

  /** One project: its states at the top. Several: one node per project, states below. */
  getChildren(node?: TreeNode): TreeNode[] {
    if (!node) {
      const all = this.projects.list();
      if (all.length === 1) return all[0].roots();
      return all.map((s) => ({ kind: "project", project: s.project }));
    }
    const state = this.projects.get(node.project);
    if (!state) return [];
    return node.kind === "project" ? state.roots() : state.children(node);
  }

  dispose(): void {
    this.emitter.dispose();
  }
}

/** One status bar item per project, named by folder when there are several. */
class StatusBars implements vscode.Disposable {
  private readonly items = new Map<string, vscode.StatusBarItem>();

  constructor(private readonly projects: Projects) {}

  draw(): void {
    const all = this.projects.list();
    for (const [p, item] of this.items) {
      if (this.projects.get(p)) continue;
      item.dispose();
      this.items.delete(p);
    }
    all.forEach((state, i) => {
      let item = this.items.get(state.project);
      if (!item) {
        item = vscode.window.createStatusBarItem(`loki.status.${state.project}`, vscode.StatusBarAlignment.Left, 50 - i);
        item.name = `Loki ${state.name}`;
        item.command = { command: "loki.showStatus", title: "Show Status", arguments: [state.project] };
        this.items.set(state.project, item);
      }
      item.text = state.statusText(all.length > 1 ? `Loki ${state.name}` : "Loki");
      item.tooltip = state.statusLines().join("\n");
      item.show();
    });
  }

  dispose(): void {
    for (const item of this.items.values()) item.dispose();
    this.items.clear();
  }
}

/** An error for a toast; a start command that is not there names the setting to set. */
function explain(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof LokidError && (e.data as { startNotFound?: string } | undefined)?.startNotFound)
    return `${message}. Set "${START_SETTING}" to lokictl's full path, e.g. ["/home/me/.venv/bin/lokictl", "ping"].`;
  return message;
}

/** After Start Run: the container's dashboard is off, so Loki Mode's dashboard on the host
 * (which lists the run) is started or found running, and offered; an editor is not a
 * terminal, so it is never opened unasked (Loki Mode's rule). */
async function hostDashboard(): Promise<void> {
  if (!vscode.workspace.getConfiguration("loki").get<boolean>("hostDashboard", true)) return;
  const d = await ensureDashboard();
  const said = `Loki: ${describeDashboard(d)}`;
  if (!d.url) {
    void vscode.window.showWarningMessage(said);
    return;
  }
  const open = "Open Dashboard";
  if ((await vscode.window.showInformationMessage(said, open)) === open)
    await vscode.env.openExternal(vscode.Uri.parse(d.url));
}

function showNotice(n: Notice): void {
  if (!vscode.workspace.getConfiguration("loki").get<boolean>("notifications", true)) return;
  if (n.level === "warning") void vscode.window.showWarningMessage(n.message);
  else if (n.level === "error") void vscode.window.showErrorMessage(n.message);
  else void vscode.window.showInformationMessage(n.message);
}

export function activate(context: vscode.ExtensionContext): void {
  const config = vscode.workspace.getConfiguration("loki");
  const client = new LokidClient({
    socketPath: config.get<string>("socketPath") || null,
    name: "vscode",
    start: config.get<string[]>("startCommand", ["lokictl", "ping"]),
  });
  const projects = new Projects(client);
  const tree = new TasksTree(projects);
  const bars = new StatusBars(projects);
  const draw = () => {
    bars.draw();
    tree.refresh();
  };
  const sync = () => {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === "file");
    projects.sync(folders.map((f) => f.uri.fsPath));
    void vscode.commands.executeCommand("setContext", "loki.hasProject", projects.size > 0);
  };
  projects.on("changed", draw);
  projects.on("state-changed", draw);
  projects.on("notice", (_state: ProjectState, n: Notice) => showNotice(n));

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

  /** The project a command acts on: the tree node's or status item's, else the only one,
   * else the one the user picks. undefined (and said why) when there is none. */
  const pick = async (target?: TreeNode | string): Promise<ProjectState | undefined> => {
    sync(); // a .loki/ may have appeared since
    const named = typeof target === "string" ? target : target?.project;
    if (named) return projects.get(named);
    const all = projects.list();
    if (all.length === 0) {
      void vscode.window.showInformationMessage(
        "Loki: no folder of this workspace holds a .loki/ folder (Loki Mode makes one where it runs).",
      );
      return undefined;
    }
    if (all.length === 1) return all[0];
    const chosen = await vscode.window.showQuickPick(
      all.map((s) => ({ label: s.name, description: s.project, state: s })),
      { placeHolder: "Which Loki project?" },
    );
    return chosen?.state;
  };
  const run =
    (what: string, fn: (state: ProjectState, target?: TreeNode | string) => Promise<string | undefined>) =>
    async (target?: TreeNode | string) => {
      const state = await pick(target);
      if (!state) return;
      try {
        const said = await fn(state, target);
        if (said) void vscode.window.showInformationMessage(`Loki: ${said}`);
      } catch (e) {
        void vscode.window.showErrorMessage(`Loki: ${what} failed: ${explain(e)}`);
      }
    };
  const taskOf = (target?: TreeNode | string) =>
    typeof target === "object" && target.kind === "task" ? target.task.id : undefined;
  const onTask = (fn: (state: ProjectState, id: string) => Promise<string>) => (state: ProjectState, target?: TreeNode | string) => {
    const id = taskOf(target);
    return id ? fn(state, id) : Promise.resolve(undefined);
  };
  const refreshAll = async () => {
    sync();
    try {
      if (projects.size) await client.connect();
    } catch (e) {
      void vscode.window.showErrorMessage(`Loki: ${explain(e)}`);
    }
    await Promise.all(projects.list().map((s) => s.refresh()));
  };

  context.subscriptions.push(
    tree,
    bars,
    vscode.window.registerTreeDataProvider("lokiTasks", tree),
    vscode.commands.registerCommand(
      "loki.startRun",
      run("start run", async (s) => {
        const said = await s.startRun();
        hostDashboard().catch((e) => void vscode.window.showWarningMessage(`Loki: host dashboard: ${explain(e)}`));
        return said;
      }),
    ),
    vscode.commands.registerCommand("loki.stopRun", run("stop", (s) => s.stopRun())),
    vscode.commands.registerCommand("loki.pause", run("pause", (s) => s.pause())),
    vscode.commands.registerCommand("loki.resume", run("resume", (s) => s.resume())),
    vscode.commands.registerCommand("loki.refresh", refreshAll),
    vscode.commands.registerCommand(
      "loki.showStatus",
      run("status", async (s) => {
        await client.connect();
        await s.refresh();
        const lines = s.statusLines();
        return s.status ? [s.name, ...lines.slice(1)].join(" — ") : lines[0];
      }),
    ),
    vscode.commands.registerCommand("loki.dlqRetry", run("retry", onTask((s, id) => s.dlqRetry(id)))),
    vscode.commands.registerCommand("loki.dlqDelete", run("delete", onTask((s, id) => s.dlqDelete(id)))),
    vscode.workspace.onDidChangeWorkspaceFolders(sync),
    { dispose: () => (projects.dispose(), client.close()) },
  );
  sync();
  draw();
}

export function deactivate(): void {}
