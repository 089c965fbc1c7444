// BullMQ agents for bench/bench_peers.py: WORKERS Workers of concurrency 1 in this process,
// each with its own Redis connection, whose job does nothing: each cycle is BullMQ's own
// "complete this job and fetch the next" (moveToFinished with fetchNext), the counterpart
// of lokid's complete with claimNext.
//
// usage: node agent.mjs PORT QUEUE SECONDS [WORKERS]
// Prints "ready" once connected, reads the start time (epoch ms) from stdin, works from then
// for SECONDS, then prints {"cycles": n, "lat": [us, ...], "drained": bool} and exits.
import { Worker } from "bullmq";
import { createInterface } from "node:readline";

const [port, queue, seconds, count = "1"] = process.argv.slice(2);
const connection = { host: "127.0.0.1", port: Number(port), maxRetriesPerRequest: null };
const lat = [];
let end = Infinity;
let drained = false;

function agent() {
  let last = 0n;
  return new Worker(
    queue,
    async () => {
      const now = process.hrtime.bigint();
      if (last && Date.now() <= end) lat.push(Number(now - last) / 1000);
      last = now;
    },
    { connection, concurrency: 1, autorun: false, drainDelay: 1 },
  );
}

const workers = Array.from({ length: Number(count) }, agent);
for (const w of workers) {
  w.on("drained", () => {
    if (Date.now() < end) drained = true;
  });
}
await Promise.all(workers.map((w) => w.waitUntilReady()));
process.stdout.write("ready\n");
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const start = Number(line);
  end = start + Number(seconds) * 1000;
  setTimeout(() => workers.forEach((w) => w.run()), Math.max(0, start - Date.now()));
  setTimeout(finish, Math.max(0, end - Date.now()));
  break;
}

async function finish() {
  const result = JSON.stringify({ cycles: lat.length, lat, drained });
  await Promise.all(workers.map((w) => w.close(true)));
  // exit only once the pipe took it all (stdout to a pipe is asynchronous)
  process.stdout.write(result + "\n", () => process.exit(0));
}
