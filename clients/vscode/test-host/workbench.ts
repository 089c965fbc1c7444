// A real VS Code for the host tests: code-server with the extension installed from its
// .vsix, driven through Chromium with playwright-core. Run by tests/test_vscode_host.py,
// which installs code-server (cached) and passes where everything is:
//   LOKI_CODE_SERVER  the code-server program      LOKI_VSIX       the packaged extension
//   LOKI_CHROMIUM     Chromium (no browser download) LOKI_ARTIFACTS  where screenshots go
//   LOKID_PYTHON      the Python that runs lokid and lokictl
// Every wait is for something on the page (text, an element) or a file; nothing sleeps.
import { ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { Browser, chromium, Locator, Page } from "playwright-core";
import { PYTHON, waitFor } from "../test/helpers";

export const CODE_SERVER = process.env.LOKI_CODE_SERVER ?? "code-server";
export const CHROMIUM = process.env.LOKI_CHROMIUM ?? "/usr/lib/chromium/chromium";
export const VSIX = process.env.LOKI_VSIX ?? path.resolve(__dirname, "..", "..", "lokid-loki.vsix");
export const ARTIFACTS = process.env.LOKI_ARTIFACTS ?? path.resolve(__dirname, "..", "..", "..", "..", ".artifacts", "vscode");

const LOAD_MS = 90_000; // a window's first load on a busy 2-core machine
const STEP_MS = 30_000;

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    http
      .get(`${url}/healthz`, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      })
      .on("error", () => resolve(false));
  });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { env, timeout: 120_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}\n${stdout}${stderr}`)) : resolve(stdout),
    ),
  );
}

export interface ServerOptions {
  /** User settings (settings.json); the quiet defaults below are added. */
  settings: Record<string, unknown>;
  /** PATH for code-server and so for the extension host. */
  path?: string;
}

/** A code-server of its own: private HOME, user data and extensions, in its own process
 * group, on a free port of 127.0.0.1 with no auth. */
export class CodeServer {
  readonly home: string;
  readonly userData: string;
  readonly extensions: string;
  proc: ChildProcess | null = null;
  url = "";
  log = "";

  constructor(readonly root: string) {
    this.home = path.join(root, "home");
    this.userData = path.join(root, "ud");
    this.extensions = path.join(root, "ext");
  }

  private env(opts: ServerOptions): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: this.home,
      XDG_CONFIG_HOME: path.join(this.home, ".config"),
      XDG_DATA_HOME: path.join(this.home, ".local", "share"),
      XDG_STATE_HOME: path.join(this.home, ".local", "state"),
      XDG_CACHE_HOME: path.join(this.home, ".cache"),
      PATH: opts.path ?? process.env.PATH,
    };
    for (const k of ["LOKID_SOCKET", "VSCODE_IPC_HOOK_CLI", "VSCODE_CWD", "XDG_RUNTIME_DIR"]) delete env[k];
    return env;
  }

  async start(opts: ServerOptions): Promise<this> {
    for (const d of [this.home, this.userData, this.extensions]) fs.mkdirSync(d, { recursive: true });
    const settings = {
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.enableExperiments": false,
      "telemetry.telemetryLevel": "off",
      "update.mode": "none",
      "extensions.autoUpdate": false,
      "extensions.autoCheckUpdates": false,
      "extensions.ignoreRecommendations": true,
      "security.workspace.trust.enabled": false,
      "chat.commandCenter.enabled": false,
      "window.commandCenter": false,
      ...opts.settings,
    };
    fs.mkdirSync(path.join(this.userData, "User"), { recursive: true });
    fs.writeFileSync(path.join(this.userData, "User", "settings.json"), JSON.stringify(settings, null, 2));
    const env = this.env(opts);
    const dirs = ["--user-data-dir", this.userData, "--extensions-dir", this.extensions];
    await run(CODE_SERVER, [...dirs, "--install-extension", VSIX], env);
    const port = await freePort();
    this.url = `http://127.0.0.1:${port}`;
    const args = [...dirs, "--bind-addr", `127.0.0.1:${port}`, "--auth", "none"];
    args.push("--disable-telemetry", "--disable-update-check", "--disable-workspace-trust");
    const proc = spawn(CODE_SERVER, args, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stdout!.on("data", (d) => (this.log += d));
    proc.stderr!.on("data", (d) => (this.log += d));
    await waitFor(`code-server to answer on ${this.url}`, async () => {
      if (proc.exitCode !== null) throw new Error(`code-server exited ${proc.exitCode}:\n${this.log}`);
      return healthy(this.url);
    }, 60_000);
    return this;
  }

  /** The whole process group: the server, its extension hosts and their children. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    try {
      process.kill(-proc.pid!, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-proc.pid!, "SIGKILL");
      } catch {
        /* gone */
      }
    }, 10_000);
    await exited;
    clearTimeout(timer);
  }

  folderUrl(folder: string): string {
    return `${this.url}/?folder=${encodeURIComponent(folder)}`;
  }

  workspaceUrl(file: string): string {
    return `${this.url}/?workspace=${encodeURIComponent(file)}`;
  }
}

/** What a test does in one VS Code window. */
export class Workbench {
  constructor(
    readonly page: Page,
    readonly name: string,
  ) {}

  static async open(browser: Browser, url: string, name: string): Promise<Workbench> {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    await page.goto(url);
    await page.locator(".part.statusbar").waitFor({ timeout: LOAD_MS });
    return new Workbench(page, name);
  }

  async close(): Promise<void> {
    await this.page.context().close();
  }

  /** The status bar items whose text holds `text`. */
  statusItem(text: string): Locator {
    return this.page.locator(".part.statusbar .statusbar-item", { hasText: text });
  }

  async waitStatus(text: string, ms = STEP_MS): Promise<string> {
    const item = this.statusItem(text).first();
    await item.waitFor({ timeout: ms });
    return item.innerText();
  }

  /** All the status bar's text (for failure messages). */
  statusText(): Promise<string> {
    return this.page.locator(".part.statusbar").innerText();
  }

  /** Run a command by its title from the command palette (F1). The palette lists an
   * extension's commands once the window knows its extensions: until then it is closed
   * and opened again. */
  async command(title: string): Promise<void> {
    const deadline = Date.now() + STEP_MS;
    const input = this.page.locator(".quick-input-widget .quick-input-box input").first();
    const row = this.page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first();
    for (;;) {
      await this.page.locator(".monaco-workbench").click({ position: { x: 700, y: 400 } });
      await this.page.keyboard.press("F1");
      await input.waitFor({ timeout: STEP_MS });
      await input.fill(`>${title}`);
      const found = await row.waitFor({ timeout: 3000 }).then(
        () => true,
        () => false,
      );
      if (found) break;
      await input.press("Escape");
      if (Date.now() > deadline) throw new Error(`the command palette has no "${title}"`);
    }
    await input.press("Enter");
    await this.page.locator(".quick-input-widget").waitFor({ state: "hidden", timeout: STEP_MS });
  }

  /** A notification toast holding `text` (it is then closed, so the next one shows);
   * `shot` names a screenshot taken while it shows. */
  async toast(text: string, shot?: string): Promise<string> {
    const t = this.page.locator(".notification-toast", { hasText: text }).first();
    await t.waitFor({ timeout: STEP_MS });
    const said = await t.innerText();
    if (shot) await this.screenshot(shot);
    await t.hover();
    await t.locator(".codicon-notifications-clear").click().catch(() => undefined);
    return said;
  }

  /** Show the Loki Mode view (the activity bar item). */
  async openView(): Promise<void> {
    const item = this.page.locator('.activitybar [aria-label^="Loki Mode"]').first();
    await item.waitFor({ timeout: STEP_MS });
    const title = this.page.locator(".part.sidebar .title-label", { hasText: /loki mode/i });
    if (!(await title.isVisible())) await item.click();
    await title.waitFor({ timeout: STEP_MS });
  }

  /** A row of the sidebar's tree whose text holds `text`. */
  row(text: string): Locator {
    return this.page.locator(".part.sidebar .monaco-list-row", { hasText: text });
  }

  async waitRow(text: string, ms = STEP_MS): Promise<Locator> {
    const r = this.row(text).first();
    await r.waitFor({ timeout: ms });
    return r;
  }

  /** Right-click `row` and choose `action` from its context menu. */
  async contextMenu(row: Locator, action: string): Promise<void> {
    await row.click({ button: "right" });
    const item = this.page.locator(".context-view .action-item", { hasText: action }).first();
    await item.waitFor({ timeout: STEP_MS });
    // Hovering focuses a menu item; Enter runs it (a click can land while the menu still
    // guards against the release of the right button that opened it).
    await item.hover();
    await this.page.locator(".context-view .action-item.focused", { hasText: action }).waitFor({ timeout: STEP_MS });
    await this.page.keyboard.press("Enter");
    await this.page.locator(".context-view .monaco-menu").waitFor({ state: "hidden", timeout: STEP_MS });
  }

  /** Count of elements matching `selector` (for what must not be there). */
  count(selector: string): Promise<number> {
    return this.page.locator(selector).count();
  }

  async screenshot(what: string, selector?: string): Promise<void> {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, `${this.name}-${what}.png`);
    if (selector) await this.page.locator(selector).first().screenshot({ path: file });
    else await this.page.screenshot({ path: file });
  }
}

/** The real lokictl, as a user runs it from `cwd` against `socket`. */
export function lokictl(socket: string, cwd: string, ...args: string[]): Promise<string> {
  const env = { ...process.env, LOKID_SOCKET: socket, PWD: cwd };
  return new Promise((resolve, reject) =>
    execFile(PYTHON, ["-m", "lokictl", "--no-spawn", ...args], { env, cwd, timeout: 30_000 }, (err, out, errOut) =>
      err ? reject(new Error(`lokictl ${args.join(" ")}: ${err.message}\n${out}${errOut}`)) : resolve(out),
    ),
  );
}

/** A `lokictl` that notes each run in `marker` and then runs the real one. */
export function recordingLokictl(file: string, marker: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `#!/bin/sh\necho "$*" >> "${marker}"\nexec "${PYTHON}" -m lokictl "$@"\n`, { mode: 0o755 });
  return file;
}

/** Something that accepts on lokid's socket path and hangs up at once, counting: each
 * connection is one (background) connect attempt of a client. */
export class HangUp {
  accepts = 0;
  private readonly server: net.Server;

  private constructor(readonly socket: string) {
    this.server = net.createServer((conn) => {
      this.accepts++;
      conn.destroy();
    });
  }

  static async listen(socket: string): Promise<HangUp> {
    fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
    const h = new HangUp(socket);
    await new Promise<void>((r) => h.server.listen(socket, r));
    return h;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

export { waitFor };
