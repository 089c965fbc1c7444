// Test support: a real `lokid serve` on a private socket, and condition waits.
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

export const REPO = path.resolve(__dirname, "..", "..", "..", "..");
export const PYTHON = process.env.LOKID_PYTHON || path.join(REPO, ".venv", "bin", "python");

/** Poll `pred` until it is truthy or `ms` passes (then throw naming `what`). */
export async function waitFor<T>(what: string, pred: () => T | Promise<T>, ms = 10000): Promise<NonNullable<T>> {
  const deadline = Date.now() + ms;
  let delay = 2;
  for (;;) {
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socket);
    s.on("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

export class Lokid {
  readonly socket: string;
  proc: ChildProcess | null = null;
  log = "";

  constructor(readonly root: string, readonly env: Record<string, string> = {}) {
    this.socket = path.join(root, "run", "lokid.sock");
  }

  static tmp(): string {
    return fs.mkdtempSync(path.join("/tmp", "lkv-"));
  }

  async start(): Promise<this> {
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_STATE_HOME: path.join(this.root, "state"), ...this.env };
    delete env.LOKID_SOCKET;
    const proc = spawn(PYTHON, ["-m", "lokid", "serve", "--socket", this.socket], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stdout!.on("data", (d) => (this.log += d));
    proc.stderr!.on("data", (d) => (this.log += d));
    await waitFor(`lokid to answer on ${this.socket}`, async () => {
      if (proc.exitCode !== null) throw new Error(`lokid exited ${proc.exitCode}:\n${this.log}`);
      return answers(this.socket);
    }, 15000);
    return this;
  }

  /** SIGTERM and wait for the exit. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
  }

  kill(): void {
    if (this.proc && this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

export function project(root: string, name = "proj"): string {
  const p = path.join(root, name);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

export function cleanup(root: string): void {
  fs.rmSync(root, { recursive: true, force: true });
}

export const tmpdir = os.tmpdir;
