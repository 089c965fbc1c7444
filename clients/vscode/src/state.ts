// The extension's state and logic, with no VS Code imports: one project's live model
// (status, tasks by state, dead letters), the status bar text, the tree, the commands
// and the notifications. extension.ts only draws it.
import { EventEmitter } from "node:events";
import * as path from "node:path";
import { LokidClient, LokidError, Subscription } from "./client";
import { LokidEvent } from "./wire";

export const STATES = ["pending", "in-progress", "completed", "dead-letter", "cancelled"] as const;
export type TaskState = (typeof STATES)[number];

export interface Task {
  id: string;
  type: string;
  priority: number;
  claimedBy?: string | null;
  lastError?: string | null;
  retries?: number;
  payload?: Record<string, unknown>;
  title?: string;
  [key: string]: unknown;
}

export interface Status {
  path: string;
  paused?: boolean;
  stopping?: boolean;
  missing?: boolean;
  signals?: string[];
  run: { state?: string; container?: string; image?: string; port?: number | null } | null;
  queue: Record<string, number> | null;
  breakers: Record<string, { state: string; failures?: number; forced?: boolean; reason?: string | null }>;
  dashboard?: { mode?: string; phase?: string; iteration?: number } | null;
  events?: LokidEvent[];
  partial?: boolean; // put together without project.status
}

export interface Notice {
  level: "info" | "warning" | "error";
  message: string;
}

/** A node of the tasks tree: a project (when the workspace has several), a state with its
 * count, a task. Each knows its project's path, so a command on it knows where it acts. */
export type TreeNode =
  | { kind: "project"; project: string }
  | { kind: "state"; project: string; state: TaskState; count: number; more: boolean }
  | { kind: "task"; project: string; state: TaskState; task: Task };

export function taskTitle(t: Task): string {
  if (typeof t.title === "string" && t.title) return t.title;
  const p = t.payload ?? {};
  for (const k of ["goal", "action", "target"]) if (typeof p[k] === "string") return p[k] as string;
  return "";
}

/** A command's result in words (the reply shapes are PROTOCOL.md's). */
export function describeResult(method: string, r: any, project: string): string {
  const name = path.basename(project);
  switch (method) {
    case "signal.pause":
      return `${name} paused (.loki/PAUSE written)`;
    case "signal.resume":
      return `${name} resumed`;
    case "signal.stop":
      return `${name} stopping (.loki/STOP written)`;
    case "run.stop": {
      const names = [...(r?.stopped ?? []), ...(r?.removed ?? [])];
      return names.length ? `stopped ${names.join(", ")}` : `no run was up in ${name}`;
    }
    case "run.start":
      return `run ${r?.container} started (${r?.image})${r?.port ? ` on port ${r.port}` : ""}`;
    case "dlq.retry":
      return `task ${r?.id} is pending again`;
    case "dlq.delete":
      return `task ${r?.id} deleted`;
    default:
      return `${method}: done`;
  }
}

/** One-line description of a task for a tree item. */
export function taskLabel(t: Task): string {
  const who = t.claimedBy ? ` @${t.claimedBy}` : "";
  const title = taskTitle(t);
  return `${t.id}  ${t.type}  p${t.priority}${who}${title ? "  " + title : ""}`;
}

/**
 * Emits "changed" after the model changed (status, tasks or dlq), and "notice" (Notice)
 * for what the user should be told: a breaker opened, a task dead-lettered, a run exited.
 */
export class ProjectState extends EventEmitter {
  status: Status | null = null;
  statusError: string | null = null;
  tasks: Record<TaskState, Task[]> | null = null;
  more: Record<string, boolean> = {};
  dlq: Task[] = [];
  lastEvents: LokidEvent[] = [];
  refreshes = 0;
  private sub: Subscription | null = null;
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(
    readonly client: LokidClient,
    readonly project: string,
    readonly listLimit = 200,
  ) {
    super();
  }

  /** Follow the project: subscribe to its events; each (re)subscription re-reads it all. */
  start(): void {
    if (this.sub) return;
    this.sub = this.client.subscribe(
      ["*"],
      this.project,
      (ev) => this.onEvent(ev),
      () => void this.refresh(),
    );
  }

  stop(): void {
    if (this.sub) this.client.unsubscribe(this.sub);
    this.sub = null;
  }

  onEvent(ev: LokidEvent): void {
    this.lastEvents.push(ev);
    if (this.lastEvents.length > 200) this.lastEvents.shift();
    const d = ev.data ?? {};
    if (ev.topic === "breaker.opened") {
      const why = d.forced ? `forced: ${d.reason}` : `${d.failures} failures`;
      this.emit("notice", { level: "warning", message: `Loki: breaker ${d.type} opened (${why})` } as Notice);
    } else if (ev.topic === "queue.dead-lettered") {
      this.emit("notice", {
        level: "warning",
        message: `Loki: task ${d.id} (${d.type}) dead-lettered: ${d.error}`,
      } as Notice);
    } else if (ev.topic === "run.exited") {
      this.emit("notice", {
        level: d.exitCode === 0 ? "info" : "warning",
        message: `Loki: run ${d.container} exited with code ${d.exitCode}`,
      } as Notice);
    }
    if (ev.topic !== "run.log" && ev.topic !== "image.pull") void this.refresh();
  }

  /** The project folder's name. */
  get name(): string {
    return path.basename(this.project);
  }

  /** Re-read status, tasks and dead letters; calls during a refresh fold into one more.
   * A refresh never starts lokid (connect() first, where the user asked for something). */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = this.refreshOnce().finally(() => {
      this.refreshing = null;
      this.refreshes++;
      this.emit("changed");
      if (this.again) {
        this.again = false;
        void this.refresh();
      }
    });
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    const p = this.project;
    const c = this.client;
    try {
      const [status, lists, dlq] = await Promise.all([
        this.fetchStatus(),
        Promise.all(
          STATES.map((state) => c.request("queue.list", { project: p, state, limit: this.listLimit })),
        ),
        c.request("dlq.list", { project: p }),
      ]);
      this.status = status;
      this.statusError = null;
      // project.status carries the project's last events: the log starts with them.
      if (!this.lastEvents.length && Array.isArray(status.events)) this.lastEvents = status.events.slice(-200);
      const tasks = {} as Record<TaskState, Task[]>;
      STATES.forEach((s, i) => {
        tasks[s] = lists[i].tasks;
        this.more[s] = lists[i].cursor !== null;
      });
      this.tasks = tasks;
      this.dlq = dlq.tasks;
    } catch (e) {
      this.statusError = e instanceof Error ? e.message : String(e);
      if (e instanceof LokidError && e.code === "unavailable") this.status = null;
    }
  }

  private async fetchStatus(): Promise<Status> {
    const c = this.client;
    const p = this.project;
    await c.connect({ start: false });
    if (c.capabilities.has("project.status")) return c.request("project.status", { project: p });
    const [stats, breakers, run] = await Promise.all([
      c.request("queue.stats", { project: p }),
      c.request("breaker.list", { project: p }).catch(() => ({ breakers: {} })),
      c.capabilities.has("run.status")
        ? c.request("run.status", { project: p }).catch(() => ({ run: null }))
        : { run: null },
    ]);
    return { path: p, run: run.run, queue: stats.states, breakers: breakers.breakers, partial: true };
  }

  /** The status bar text: state, pending/running counts, open breakers. `label` is what
   * names it ("Loki"; with several projects, "Loki <folder>"). */
  statusText(label = "Loki"): string {
    return this.statusIcon() + ` ${label}: ` + this.summary();
  }

  private statusIcon(): string {
    return this.status && this.client.state === "connected" ? "$(rocket)" : "$(debug-disconnect)";
  }

  /** "idle · 1 pending · 0 running" (and open breakers), or "offline". */
  summary(): string {
    const st = this.status;
    if (!st || this.client.state !== "connected") return "offline";
    let state = "idle";
    if (st.stopping) state = "stopping";
    else if (st.paused) state = "paused";
    else if (st.run?.state) state = st.run.state;
    const q = st.queue ?? {};
    let text = `${state} · ${q["pending"] ?? 0} pending · ${q["in-progress"] ?? 0} running`;
    const open = Object.entries(st.breakers ?? {})
      .filter(([, b]) => b.state !== "closed")
      .map(([name]) => name)
      .sort();
    if (open.length) text += ` · $(warning) ${open.join(",")}`;
    return text;
  }

  /** A multi-line summary (the status command, the status bar tooltip). */
  statusLines(): string[] {
    const st = this.status;
    if (!st) return [`Loki ${this.project}: ${this.statusError ?? "not connected"}`];
    const lines = [`Loki ${this.project}`];
    const flags = [st.missing && "MISSING", st.paused && "PAUSED", st.stopping && "STOPPING"].filter(Boolean);
    if (flags.length) lines.push(`State: ${flags.join(" ")}`);
    const r = st.run;
    lines.push(r ? `Run: ${r.state} ${r.container} (${r.image})${r.port ? " port " + r.port : ""}` : "Run: none");
    const q = st.queue ?? {};
    lines.push("Queue: " + STATES.map((s) => `${s} ${q[s] ?? 0}`).join(", "));
    const names = Object.keys(st.breakers ?? {}).sort();
    lines.push(
      names.length
        ? "Breakers: " + names.map((n) => `${n} ${st.breakers[n].state} (${st.breakers[n].failures ?? 0})`).join(", ")
        : "Breakers: all closed",
    );
    if (st.signals) lines.push("Signals: " + (st.signals.length ? st.signals.join(", ") : "none"));
    return lines;
  }

  /** Tree roots: one node per state; children: that state's tasks. */
  roots(): TreeNode[] {
    return STATES.map((state) => ({
      kind: "state",
      project: this.project,
      state,
      count: this.tasks?.[state]?.length ?? 0,
      more: this.more[state] ?? false,
    }));
  }

  children(node: TreeNode): TreeNode[] {
    if (node.kind !== "state") return [];
    return (this.tasks?.[node.state] ?? []).map((task) => ({ kind: "task", project: this.project, state: node.state, task }));
  }

  // -- commands: each is something the user asked for, so each may start lokid ----------

  /** Send `method` (connecting as the user asked first), re-read, and say what happened
   * in words. */
  private async ask(method: string, params: Record<string, unknown>): Promise<string> {
    await this.client.connect();
    const r = await this.client.request(method, { project: this.project, ...params });
    void this.refresh();
    return describeResult(method, r, this.project);
  }

  startRun(args?: string[]): Promise<string> {
    return this.ask("run.start", args?.length ? { args } : {});
  }

  /** STOP through signal.stop when lokid serves it (Loki Mode stops too), else run.stop. */
  async stopRun(): Promise<string> {
    await this.client.connect();
    return this.ask(this.client.capabilities.has("signal.stop") ? "signal.stop" : "run.stop", {});
  }

  pause(): Promise<string> {
    return this.signal("pause");
  }

  resume(): Promise<string> {
    return this.signal("resume");
  }

  private async signal(name: "pause" | "resume"): Promise<string> {
    await this.client.connect();
    const method = `signal.${name}`;
    if (!this.client.capabilities.has(method))
      throw new LokidError("method_not_found", `this lokid does not serve ${method}`);
    return this.ask(method, {});
  }

  dlqRetry(id: string, note = "from VS Code"): Promise<string> {
    return this.ask("dlq.retry", { id, note });
  }

  dlqDelete(id: string, note = "from VS Code"): Promise<string> {
    return this.ask("dlq.delete", { id, note });
  }
}
