// Loki Mode's dashboard on the host, for container runs (as `lokictl run start` does). The
// container's own dashboard is off (it would see only its project), so after Start Run this
// makes sure Loki Mode's dashboard runs on the host, where it lists the run beside every
// other project: `loki dashboard start --port P` (P is 57374, or $LOKI_DASHBOARD_PORT, or
// the next free port) starts it and does nothing when it runs already; `loki dashboard url
// --format json` says where it is. `loki` runs from an argv list (no shell) in its own process
// group, stdin closed, with a timeout; its output goes to a temporary file and is never shown
// (a failure says its last line). An editor is not a terminal, so nothing opens a browser by
// itself (Loki Mode's rule): the user is offered the address. No VS Code imports.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { findProgram } from "./locate";

export const HINT =
  "no host dashboard: Loki Mode's `loki` CLI is not on PATH (npm install -g loki-mode, " +
  "or brew tap asklokesh/tap && brew install loki-mode); its dashboard lists this run";

const FIRST_PORT = 57374;
const TRIES = 50;
const QUERY_TIMEOUT_MS = 15000;

export interface HostDashboard {
  /** "started", "running" (it was up and is reused), "absent" (no `loki`) or "failed". */
  state: "started" | "running" | "absent" | "failed";
  url?: string;
  message?: string;
}

export interface EnsureOptions {
  env?: NodeJS.ProcessEnv;
  /** How long `loki dashboard start` may take (a first one installs Python packages). */
  timeoutMs?: number;
}

/** Something holds 127.0.0.1:`port`: a connection is accepted, or a listen fails. */
export async function inUse(port: number): Promise<boolean> {
  const answers = await new Promise<boolean>((resolve) => {
    const s = net.createConnection({ host: "127.0.0.1", port });
    s.setTimeout(500, () => (s.destroy(), resolve(false)));
    s.on("connect", () => (s.destroy(), resolve(true)));
    s.on("error", () => resolve(false));
  });
  if (answers) return true;
  return new Promise<boolean>((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(true));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => server.close(() => resolve(false)));
  });
}

/** 57374 ($LOKI_DASHBOARD_PORT when set), else the next free port, 50 at most; when all are
 * taken, the first (and `loki` says the port is in use). */
export async function pickPort(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const asked = Number(env.LOKI_DASHBOARD_PORT ?? "");
  const first = Number.isInteger(asked) && asked > 0 && asked < 65536 ? asked : FIRST_PORT;
  for (let port = first; port < first + TRIES && port < 65536; port++) if (!(await inUse(port))) return port;
  return first;
}

/** Run `argv`: its exit code (null after the timeout, when its process group is killed) and
 * its output's non-empty lines. */
function run(argv: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; lines: string[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loki-dash-"));
  const file = path.join(dir, "out");
  const fd = fs.openSync(file, "w", 0o600);
  return new Promise((resolve) => {
    let timedOut = false;
    const child = spawn(argv[0], argv.slice(1), { env, stdio: ["ignore", fd, fd], detached: true });
    fs.closeSync(fd);
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        /* gone already */
      }
    }, timeoutMs);
    const done = (code: number | null) => {
      clearTimeout(timer);
      let text = "";
      try {
        text = fs.readFileSync(file, "utf8").slice(-1 << 20);
      } catch {
        /* nothing written */
      }
      fs.rmSync(dir, { recursive: true, force: true });
      const lines = text
        .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter(Boolean);
      resolve({ code: timedOut ? null : code, lines });
    };
    child.once("error", () => done(127));
    child.once("exit", (code) => done(code ?? 1));
  });
}

async function askUrl(loki: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const { code, lines } = await run([loki, "dashboard", "url", "--format", "json"], env, QUERY_TIMEOUT_MS);
  if (code !== 0) return undefined;
  const line = [...lines].reverse().find((l) => l.startsWith("{"));
  if (!line) return undefined;
  try {
    const found = JSON.parse(line);
    const url = found?.running === true ? found.url : undefined;
    if (typeof url !== "string" || !/^https?:\/\//.test(url)) return undefined;
    // A dashboard bound to every interface is reached on the loopback one.
    return url.replace(/\/\/(0\.0\.0\.0|\[::\]):/, "//127.0.0.1:");
  } catch {
    return undefined;
  }
}

/** Reuse Loki Mode's host dashboard when it runs, else start it. */
export async function ensureDashboard(opts: EnsureOptions = {}): Promise<HostDashboard> {
  const env = opts.env ?? process.env;
  const loki = findProgram("loki", env);
  if (!loki) return { state: "absent", message: HINT };
  const running = await askUrl(loki, env);
  if (running) return { state: "running", url: running };
  const port = await pickPort(env);
  const timeoutMs = opts.timeoutMs ?? 120000;
  const { code, lines } = await run([loki, "dashboard", "start", "--port", String(port)], env, timeoutMs);
  const url = await askUrl(loki, env);
  if (url) return { state: "started", url };
  const last = lines.length ? `: ${lines[lines.length - 1].slice(0, 200)}` : "";
  const why = code === null ? `did not finish in ${timeoutMs / 1000} s and was stopped` : `failed (exit ${code})${last}`;
  return { state: "failed", message: `\`loki dashboard start --port ${port}\` ${why}` };
}

/** The outcome in words, for a notification. */
export function describeDashboard(d: HostDashboard): string {
  if (!d.url) return d.message ?? "";
  return `Loki Mode's dashboard ${d.url} (${d.state === "started" ? "started" : "already running"}) lists this run`;
}
