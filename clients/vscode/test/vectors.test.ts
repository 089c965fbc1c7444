// The shared wire vectors (clients/vectors/vectors.json) through the TypeScript decoder.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { decode } from "@msgpack/msgpack";
import { classify, encodeRequest, FrameDecoder } from "../src/wire";
import { REPO } from "./helpers";

const doc = JSON.parse(fs.readFileSync(path.join(REPO, "clients", "vectors", "vectors.json"), "utf8"));

for (const vec of doc.vectors) {
  test(`vector: ${vec.name}`, () => {
    const d = new FrameDecoder(vec.max_frame);
    const frames: { kind: string; message: unknown }[] = [];
    let error = null;
    for (const hex of vec.chunks) {
      const r = d.feed(Buffer.from(hex, "hex"));
      for (const body of r.frames) frames.push(classify(body));
      if (r.error) {
        error = r.error;
        break;
      }
    }
    assert.deepEqual(frames, vec.frames);
    assert.deepEqual(error, vec.error);
    if (!error) assert.equal(d.pending(), vec.pending);
    // What this encoder writes for a request means the same.
    for (const f of vec.frames) {
      if (f.kind !== "request") continue;
      const [, msgid, method, params] = f.message;
      assert.deepEqual(decode(encodeRequest(msgid, method, params).subarray(4)), f.message);
    }
  });
}

test("the vectors cover requests, replies, errors, events and broken streams", () => {
  const kinds = new Set(doc.vectors.flatMap((v: any) => v.frames.map((f: any) => f.kind)));
  assert.deepEqual([...kinds].sort(), ["error-response", "event", "invalid", "notification", "request", "response"]);
  assert.ok(doc.vectors.length >= 20);
});
