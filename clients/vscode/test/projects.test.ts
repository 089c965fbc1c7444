// The workspace's projects (projects.ts) against a real lokid: only folders that hold
// .loki/ are followed, each live; a folder without one is never named to lokid.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { LokidClient } from "../src/client";
import { hasLoki, projectPath, Projects } from "../src/projects";
import { cleanup, Lokid, project, waitFor } from "./helpers";

let root: string;
let lokid: Lokid;

before(async () => {
  root = Lokid.tmp();
  lokid = await new Lokid(root).start();
});

after(() => {
  lokid.kill();
  cleanup(root);
});

test("every folder with .loki/ is followed, in folder order; the others are left alone", async () => {
  const [a, b, c] = ["a", "b", "c"].map((n) => project(root, n));
  fs.mkdirSync(path.join(a, ".loki"));
  fs.mkdirSync(path.join(c, ".loki"));
  fs.writeFileSync(path.join(b, ".loki"), "a file, not a folder");
  assert.deepEqual([a, b, c].map(hasLoki), [true, false, true]);
  assert.equal(projectPath(`${a}//`), a);

  const client = new LokidClient({ socketPath: lokid.socket });
  const projects = new Projects(client);
  let changes = 0;
  projects.on("changed", () => changes++);
  try {
    projects.sync([c, `${b}/`, `${a}/`]);
    assert.deepEqual(projects.list().map((s) => s.project), [c, a]);
    assert.equal(changes, 1);
    await waitFor("both followed", () => projects.list().every((s) => s.tasks !== null));
    const known: string[] = (await client.request("daemon.status")).projects;
    assert.deepEqual([...known].sort(), [a, c]);
    assert.equal(fs.statSync(path.join(b, ".loki")).isFile(), true);

    projects.sync([a, b, c]); // the same set: no change, order as given
    assert.equal(changes, 1);
    assert.deepEqual(projects.list().map((s) => s.project), [a, c]);
    projects.sync([a]);
    assert.deepEqual(projects.list().map((s) => s.project), [a]);
    assert.equal(changes, 2);
  } finally {
    projects.dispose();
    client.close();
  }
});
