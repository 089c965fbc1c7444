// The projects of a workspace: every folder that holds a `.loki/` folder, each followed
// live by its own ProjectState over one shared client. A folder without `.loki/` is never
// named to lokid (naming a folder makes lokid watch it; reads may create `.loki/` there).
// No VS Code imports.
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import * as path from "node:path";
import { LokidClient } from "./client";
import { ProjectState } from "./state";

/** Whether `folder` holds a `.loki/` folder (a Loki Mode project). */
export function hasLoki(folder: string): boolean {
  try {
    return fs.statSync(path.join(folder, ".loki")).isDirectory();
  } catch {
    return false;
  }
}

/** A folder path as lokid wants it: absolute, no trailing slash. */
export function projectPath(folder: string): string {
  return folder.length > 1 ? folder.replace(/\/+$/, "") : folder;
}

/**
 * Emits "changed" when the set of projects changed, and "state-changed" (ProjectState)
 * and "notice" (ProjectState, Notice) for what each project emits.
 */
export class Projects extends EventEmitter {
  private readonly states = new Map<string, ProjectState>();

  constructor(readonly client: LokidClient) {
    super();
  }

  /** Follow exactly those of `folders` (in that order) that hold a `.loki/` folder. */
  sync(folders: string[]): void {
    const wanted = folders.map(projectPath).filter(hasLoki);
    let changed = false;
    for (const [p, state] of this.states) {
      if (wanted.includes(p)) continue;
      state.stop();
      state.removeAllListeners();
      this.states.delete(p);
      changed = true;
    }
    const kept = new Map<string, ProjectState>();
    for (const p of wanted) {
      let state = this.states.get(p);
      if (!state) {
        state = new ProjectState(this.client, p);
        const s = state;
        s.on("changed", () => this.emit("state-changed", s));
        s.on("notice", (n) => this.emit("notice", s, n));
        s.start();
        changed = true;
      }
      kept.set(p, state);
    }
    this.states.clear();
    for (const [p, s] of kept) this.states.set(p, s);
    if (changed) this.emit("changed");
  }

  /** The followed projects, in the workspace's folder order. */
  list(): ProjectState[] {
    return [...this.states.values()];
  }

  get(project: string): ProjectState | undefined {
    return this.states.get(project);
  }

  get size(): number {
    return this.states.size;
  }

  dispose(): void {
    this.removeAllListeners();
    this.sync([]);
  }
}
