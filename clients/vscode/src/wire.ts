// lokid wire protocol v1 (PROTOCOL.md sections 2, 3 and 5): framing and message shapes.
// No I/O and no VS Code imports; the tests feed it the shared vectors.
import { decode, encode } from "@msgpack/msgpack";

export const MAX_FRAME = 16 * 1024 * 1024;

export interface TooLarge {
  code: "too_large";
  length: number;
  limit: number;
}

/** Splits a byte stream into frame bodies. After a too_large error it is poisoned:
 * the stream has no boundary left, so the connection must be closed. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private need: number | null = null;
  private error: TooLarge | null = null;

  constructor(readonly limit: number = MAX_FRAME) {}

  /** Whole frame bodies found so far, and the error once a length is over the limit
   * (frames before it are still returned). */
  feed(chunk: Uint8Array): { frames: Uint8Array[]; error: TooLarge | null } {
    const frames: Uint8Array[] = [];
    if (this.error) return { frames, error: this.error };
    let buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk);
    let pos = 0;
    for (;;) {
      if (this.need === null) {
        if (buf.length - pos < 4) break;
        const length = buf.readUInt32BE(pos);
        if (length > this.limit) {
          this.error = { code: "too_large", length, limit: this.limit };
          this.buf = Buffer.alloc(0);
          return { frames, error: this.error };
        }
        this.need = length;
        pos += 4;
      }
      if (buf.length - pos < this.need) break;
      frames.push(buf.subarray(pos, pos + this.need));
      pos += this.need;
      this.need = null;
    }
    this.buf = pos ? Buffer.from(buf.subarray(pos)) : buf;
    return { frames, error: null };
  }

  /** Bytes held that do not make a whole frame yet (a read header counts 4). */
  pending(): number {
    return this.buf.length + (this.need !== null ? 4 : 0);
  }
}

export function frame(body: Uint8Array): Buffer {
  const out = Buffer.alloc(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

export function encodeRequest(msgid: number, method: string, params: object = {}): Buffer {
  return frame(encode([0, msgid, method, params], { ignoreUndefined: true }));
}

export function encodeNotification(method: string, params: object = {}): Buffer {
  return frame(encode([2, method, params], { ignoreUndefined: true }));
}

export type Kind = "request" | "response" | "error-response" | "notification" | "event" | "invalid";

export interface WireError {
  code: string;
  message: string;
  data?: unknown;
}

export interface LokidEvent {
  sub: number;
  seq: number;
  topic: string;
  project: string | null;
  time: string;
  data: any;
}

const isMap = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
const isInt = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x);

/** What PROTOCOL.md says a frame body is. */
export function classify(body: Uint8Array): { kind: Kind; message: any } {
  let msg: unknown;
  try {
    msg = decode(body); // throws on bad bytes, an empty body and trailing bytes
  } catch {
    return { kind: "invalid", message: null };
  }
  const bad = { kind: "invalid" as Kind, message: null };
  if (!Array.isArray(msg) || msg.length === 0) return bad;
  switch (msg[0]) {
    case 0:
      if (msg.length === 4 && isInt(msg[1]) && typeof msg[2] === "string" && isMap(msg[3]))
        return { kind: "request", message: msg };
      return bad;
    case 1: {
      if (msg.length !== 4 || !(isInt(msg[1]) || msg[1] === null)) return bad;
      const err = msg[2];
      if (err === null) return msg[1] === null ? bad : { kind: "response", message: msg };
      if (isMap(err) && typeof err.code === "string" && typeof err.message === "string" && msg[3] === null)
        return { kind: "error-response", message: msg };
      return bad;
    }
    case 2: {
      if (msg.length !== 3 || typeof msg[1] !== "string") return bad;
      if (msg[1] !== "event") return { kind: "notification", message: msg };
      const ev = msg[2];
      if (
        isMap(ev) &&
        isInt(ev.sub) &&
        isInt(ev.seq) &&
        typeof ev.topic === "string" &&
        (typeof ev.project === "string" || ev.project === null) &&
        typeof ev.time === "string"
      )
        return { kind: "event", message: msg };
      return bad;
    }
    default:
      return bad;
  }
}
