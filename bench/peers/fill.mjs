// Fill (or remove) a BullMQ queue for bench/bench_peers.py.
// usage: node fill.mjs PORT QUEUE N    -> adds N jobs in bulks of 1,000, prints the count
//        node fill.mjs PORT QUEUE drop -> obliterates the queue
import { Queue } from "bullmq";

const [port, name, what] = process.argv.slice(2);
const queue = new Queue(name, { connection: { host: "127.0.0.1", port: Number(port) } });
const types = ["eng-backend", "eng-frontend", "ops-devops", "eng-qa"];
if (what === "drop") {
  await queue.obliterate({ force: true });
} else {
  const n = Number(what);
  for (let first = 0; first < n; first += 1000) {
    const jobs = [];
    for (let i = first; i < Math.min(n, first + 1000); i++) {
      const data = { action: "implement", target: `src/bench_${i}.py`, goal: "ok" };
      jobs.push({ name: types[i % 4], data });
    }
    await queue.addBulk(jobs);
  }
  process.stdout.write(`${await queue.count()}\n`);
}
await queue.close();
