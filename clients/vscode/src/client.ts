// A lokid client over its unix socket: requests matched to replies by msgid, events,
// subscriptions that survive a reconnect, reconnect with backoff. No VS Code imports.
import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { findProgram } from "./locate";
import { classify, encodeNotification, encodeRequest, FrameDecoder, LokidEvent, WireError } from "./wire";

/** The socket path, first match wins (PROTOCOL.md section 1), as lokictl resolves it. */
export function defaultSocketPath(
  explicit?: string | null,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  uid: number = process.getuid ? process.getuid() : 0,
): string {
  if (explicit) return explicit;
  if (env.LOKID_SOCKET) return env.LOKID_SOCKET;
  if (platform === "darwin")
    return path.join(os.homedir(), "Library", "Application Support", "lokid", "lokid.sock");
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, "lokid", "lokid.sock");
  return `/tmp/lokid-${uid}/lokid.sock`;
}

/** An error reply from lokid, or `unavailable` when lokid cannot be reached. */
export class LokidError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly data?: unknown,
  ) {
    super(`${code}: ${message}`);
    this.name = "LokidError";
  }
}

export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface ClientOptions {
  socketPath?: string | null;
  name?: string;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** A command (argv, no shell) that starts lokid, run when connect() finds nobody; never
   * for a request, a subscription or a background reconnect. A bare program name is looked
   * for as locate.findProgram says. It gets LOKID_SOCKET = our socket path. */
  start?: string[] | null;
}

interface Pending {
  resolve: (value: any) => void;
  reject: (err: LokidError) => void;
}

export interface Subscription {
  readonly topics: string[];
  readonly project: string | null;
  sub: number | null;
  handler: (ev: LokidEvent) => void;
  onSubscribed?: () => void;
  dropped?: boolean;
}

/**
 * Emits: "connected" (first time), "reconnected", "disconnected" (reason: string),
 * "error" is never emitted (failures reject the requests that met them).
 *
 * Only connect() may start lokid: requests and subscriptions connect in the background, and
 * a client that follows something keeps trying in the background (with backoff) until lokid
 * is there, so `lokictl daemon stop` stays stopped and a lokid started later is found.
 */
export class LokidClient extends EventEmitter {
  readonly socketPath: string;
  readonly name: string;
  state: ClientState = "idle";
  capabilities = new Set<string>();
  server: Record<string, unknown> | null = null;
  private sock: net.Socket | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subs: Subscription[] = [];
  private bySub = new Map<number, Subscription>();
  private connecting: Promise<void> | null = null;
  private everConnected = false;
  private backoff = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly backoffMin: number;
  private readonly backoffMax: number;
  private readonly start: string[] | null;
  private starting: Promise<void> | null = null;

  constructor(opts: ClientOptions = {}) {
    super();
    this.socketPath = defaultSocketPath(opts.socketPath);
    this.name = opts.name ?? "vscode";
    this.backoffMin = opts.backoffMinMs ?? 50;
    this.backoffMax = opts.backoffMaxMs ?? 2000;
    this.start = opts.start?.length ? opts.start : null;
  }

  /** Connect (idempotent); resolves once hello has answered. This is a connect the user
   * asked for: if nobody answers and `start` is set, it runs once and the connect is tried
   * again. `{start: false}`: a background connect, which never starts lokid. */
  connect(opts: { start?: boolean } = {}): Promise<void> {
    if (this.starting) return this.starting;
    if (opts.start === false) return this.dial();
    return this.dial().catch((err: LokidError) => {
      if (!this.start || err.code !== "unavailable" || this.state === "closed") throw err;
      this.starting ??= this.startDaemon()
        .then(() => this.dial())
        .finally(() => (this.starting = null));
      return this.starting;
    });
  }

  /** Run the start command. Its failure rejects with `unavailable`; when the program is
   * not there, `data.startNotFound` names it (so the caller can say which setting to set). */
  private startDaemon(): Promise<void> {
    const [cmd, ...args] = this.start!;
    const env = { ...process.env, LOKID_SOCKET: this.socketPath };
    const notFound = () =>
      new LokidError(
        "unavailable",
        `${this.notRunning()}; ${cmd} was not found (looked on PATH, in ~/.local/bin and pipx's folders)`,
        { startNotFound: cmd },
      );
    const program = findProgram(cmd);
    if (!program) return Promise.reject(notFound());
    return new Promise((resolve, reject) => {
      execFile(program, args, { env, timeout: 60_000 }, (failed, stdout, stderr) => {
        if (!failed) return resolve();
        if ((failed as NodeJS.ErrnoException).code === "ENOENT") return reject(notFound());
        const said = `${stderr}${stdout}`.trim().split("\n").pop();
        const how = typeof failed.code === "number" ? `exited ${failed.code}` : `failed (${failed.message})`;
        reject(new LokidError("unavailable", `${this.notRunning()}; ${cmd} ${how}${said ? `: ${said}` : ""}`));
      });
    });
  }

  private notRunning(): string {
    return `lokid is not running on ${this.socketPath}`;
  }

  private dial(): Promise<void> {
    if (this.state === "connected") return Promise.resolve();
    if (this.state === "closed") return Promise.reject(new LokidError("unavailable", "client closed"));
    if (this.connecting) return this.connecting;
    this.clearTimer();
    this.state = "connecting";
    this.connecting = new Promise<void>((resolve, reject) => {
      const sock = net.createConnection(this.socketPath);
      const decoder = new FrameDecoder();
      let opened = false;
      sock.on("connect", () => {
        opened = true;
        this.sock = sock;
        this.pending = new Map();
        this.bySub = new Map();
        for (const s of this.subs) s.sub = null;
        this.send("hello", { client: this.name, protocol: 1 }).then(
          (hello: any) => {
            this.server = hello;
            this.capabilities = new Set(hello.capabilities ?? []);
            const first = !this.everConnected;
            this.everConnected = true;
            this.backoff = 0;
            this.state = "connected";
            this.connecting = null;
            for (const s of this.subs) this.subscribeNow(s);
            resolve();
            this.emit(first ? "connected" : "reconnected");
          },
          (err: LokidError) => {
            this.connecting = null;
            reject(err);
          },
        );
      });
      sock.on("data", (chunk) => {
        const { frames, error } = decoder.feed(chunk);
        for (const body of frames) this.dispatch(body);
        if (error) sock.destroy(new Error(`frame of ${error.length} bytes over the limit`));
      });
      sock.on("error", () => {
        /* the close handler does the work */
      });
      sock.on("close", () => {
        if (!opened) {
          this.connecting = null;
          const err = new LokidError("unavailable", this.notRunning());
          const retry = this.everConnected || this.subs.length > 0;
          this.state = this.state === "closed" ? "closed" : retry ? "reconnecting" : "idle";
          if (this.state === "reconnecting") this.scheduleReconnect();
          reject(err);
          return;
        }
        this.lost(sock);
      });
    });
    return this.connecting;
  }

  private lost(sock: net.Socket): void {
    if (this.sock !== sock) return;
    this.sock = null;
    const pending = this.pending;
    this.pending = new Map();
    this.bySub = new Map();
    for (const s of this.subs) s.sub = null;
    for (const p of pending.values()) p.reject(new LokidError("unavailable", "connection to lokid lost"));
    if (this.state === "closed") return;
    const wasConnected = this.state === "connected";
    this.state = "reconnecting";
    this.connecting = null;
    if (wasConnected) this.emit("disconnected", "connection to lokid lost");
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.clearTimer();
    this.backoff = Math.min(this.backoff ? this.backoff * 2 : this.backoffMin, this.backoffMax);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.state === "reconnecting") {
        this.state = "idle";
        this.dial().catch(() => undefined);
      }
    }, this.backoff);
    this.timer.unref?.();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private dispatch(body: Uint8Array): void {
    const { kind, message } = classify(body);
    if (kind === "response" || kind === "error-response") {
      const id = message[1];
      const p = id === null ? undefined : this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      if (kind === "response") p.resolve(message[3]);
      else {
        const e = message[2] as WireError;
        p.reject(new LokidError(e.code, e.message, e.data));
      }
    } else if (kind === "event") {
      const ev = message[2] as LokidEvent;
      const s = this.bySub.get(ev.sub);
      if (s) s.handler(ev);
    }
  }

  private send(method: string, params: object): Promise<any> & { msgid?: number } {
    const sock = this.sock;
    if (!sock) return Promise.reject(new LokidError("unavailable", "not connected"));
    const msgid = this.nextId++;
    const promise: Promise<any> & { msgid?: number } = new Promise((resolve, reject) => {
      this.pending.set(msgid, { resolve, reject });
    });
    promise.msgid = msgid;
    sock.write(encodeRequest(msgid, method, params));
    return promise;
  }

  /** Send a request (connecting first in the background if needed: it never starts lokid)
   * and resolve with its result; an error reply rejects with LokidError. `signal` aborts it
   * with $/cancel. */
  async request<T = any>(method: string, params: object = {}, opts: { signal?: AbortSignal } = {}): Promise<T> {
    if (this.state !== "connected") await (this.starting ?? this.dial());
    const promise = this.send(method, params);
    const msgid = promise.msgid!;
    if (opts.signal) {
      const sock = this.sock;
      const onAbort = () => {
        if (this.sock === sock && this.pending.has(msgid)) sock?.write(encodeNotification("$/cancel", { id: msgid }));
      };
      if (opts.signal.aborted) onAbort();
      else opts.signal.addEventListener("abort", onAbort, { once: true });
    }
    return promise;
  }

  private subscribeNow(s: Subscription): void {
    const params: Record<string, unknown> = { topics: s.topics };
    if (s.project) params.project = s.project;
    this.send("subscribe", params).then(
      (r: { sub: number }) => {
        if (s.dropped) {
          this.request("unsubscribe", { sub: r.sub }).catch(() => undefined);
          return;
        }
        s.sub = r.sub;
        this.bySub.set(r.sub, s);
        s.onSubscribed?.();
      },
      () => undefined, // the connection went: it is made again on reconnect
    );
  }

  /** Subscribe now and again after every reconnect. `onSubscribed` runs each time:
   * re-read state there, so nothing that happened while disconnected is missed. */
  subscribe(
    topics: string[],
    project: string | null,
    handler: (ev: LokidEvent) => void,
    onSubscribed?: () => void,
  ): Subscription {
    const s: Subscription = { topics, project, sub: null, handler, onSubscribed };
    this.subs.push(s);
    if (this.state === "connected") this.subscribeNow(s);
    else this.dial().catch(() => undefined);
    return s;
  }

  unsubscribe(s: Subscription): void {
    s.dropped = true;
    this.subs = this.subs.filter((x) => x !== s);
    if (s.sub !== null && this.state === "connected") {
      this.bySub.delete(s.sub);
      this.request("unsubscribe", { sub: s.sub }).catch(() => undefined);
    }
  }

  close(): void {
    this.state = "closed";
    this.clearTimer();
    this.sock?.destroy();
  }
}
