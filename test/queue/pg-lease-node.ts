// One foreman node's lease keeper in its own process, for test/queue/pg-leases.test.ts: keeps leases on
// the targets given for the node given, printing one JSON line per event on stdout:
// {"event":"acquired"|"lost","target","token","t"} (t: Date.now(), for the test's measured takeover times).
// Usage: bun test/queue/pg-lease-node.ts <url> <node> <ttlMs> <pollMs> <target>...
import { SQL } from "bun";
import { LeaseKeeper } from "../../src/queue/pg/leases";

const [url, node, ttl, poll, ...targets] = process.argv.slice(2);
const sql = new SQL(url!, { max: 2 });
const tokens = new Map<string, number>();
const say = (event: string, target: string, token: number | null) =>
  process.stdout.write(JSON.stringify({ event, target, token, t: Date.now() }) + "\n");

const keeper = new LeaseKeeper({
  sql,
  node: node!,
  targets,
  ttlMs: Number(ttl),
  pollMs: Number(poll),
  onAcquired(target, token) {
    tokens.set(target, token);
    say("acquired", target, token);
  },
  onLost(target) {
    say("lost", target, tokens.get(target) ?? null);
  },
});
keeper.start();
say("started", "", null);

process.on("SIGTERM", async () => {
  await keeper.stop();
  await sql.close();
  process.exit(0);
});
