// A throwaway PostgreSQL cluster for tests and benches: initdb in a temporary folder, pg_ctl start on a free
// loopback port (and a Unix socket in the same folder), one database, stopped and deleted by stop(). Uses
// Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin); as root the server runs as the
// `postgres` user, since PostgreSQL refuses to run as root. No systemd, no shared cluster: each call is its own.
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PgCluster {
  /** postgres://… for the cluster's database, over TCP on 127.0.0.1. */
  url: string;
  port: number;
  /** A URL for another database on the same cluster (created by createDatabase). */
  urlFor(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** The folder holding initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/<version>/bin. */
export function pgBinDir(): string | null {
  const fromEnv = process.env.PG_BIN;
  if (fromEnv) return existsSync(join(fromEnv, "initdb")) ? fromEnv : null;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0]!, "bin") : null;
}

const PG_MISSING =
  "PostgreSQL's server programs are missing: install Debian's postgresql package (apt-get install -y postgresql), or point PG_BIN at a folder holding initdb and pg_ctl";

async function freePort(): Promise<number> {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

/** Runs a PostgreSQL program, as the postgres user when we are root; throws with its output on failure. */
async function run(bin: string, args: string[], asPostgres: boolean): Promise<void> {
  const cmd = asPostgres ? ["runuser", "-u", "postgres", "--", bin, ...args] : [bin, ...args];
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, LC_ALL: "C" } });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}:\n${out}${err}`);
}

export async function startPgCluster(options: { database?: string } = {}): Promise<PgCluster> {
  const bin = pgBinDir();
  if (!bin) throw new Error(PG_MISSING);
  const asPostgres = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), "foreman-pg-"));
  chmodSync(dir, 0o700);
  if (asPostgres) {
    const pw = Bun.spawnSync(["id", "-u", "postgres"]);
    const gr = Bun.spawnSync(["id", "-g", "postgres"]);
    chownSync(dir, Number(pw.stdout.toString().trim()), Number(gr.stdout.toString().trim()));
  }
  const data = join(dir, "data");
  await run(join(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"], asPostgres);
  const port = await freePort();
  const settings = [
    `-c listen_addresses=127.0.0.1`,
    `-c port=${port}`,
    `-c unix_socket_directories=${dir}`,
    // A test cluster: durability is not what is tested here, speed on a shared 2-core machine is.
    `-c fsync=off`,
    `-c synchronous_commit=off`,
    `-c full_page_writes=off`,
    `-c max_connections=200`,
    `-c shared_buffers=64MB`,
  ].join(" ");
  await run(join(bin, "pg_ctl"), ["-D", data, "-l", join(dir, "log"), "-o", settings, "-w", "-t", "60", "start"], asPostgres);
  const base = `postgres://postgres@127.0.0.1:${port}`;
  const admin = new Bun.SQL(`${base}/postgres`, { max: 1 });
  const database = options.database ?? "foreman";
  let stopped = false;
  const cluster: PgCluster = {
    port,
    url: `${base}/${database}`,
    urlFor: (name) => `${base}/${name}`,
    async createDatabase(name) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${name}: lower-case letters, digits and _ only`);
      await admin.unsafe(`CREATE DATABASE ${name}`);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await admin.close().catch(() => {});
      await run(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"], asPostgres).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await cluster.createDatabase(database);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
