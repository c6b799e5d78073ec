/// <reference lib="webworker" />
// The worker thread's entry point: owns the job loop and the upstream fetch, talks only by postMessage.
import { createLogger } from "../log";
import { openDatabase, startCheckpoints } from "../queue/db";
import { isPostgresUrl } from "../queue/pg/url";
import { openJobTables } from "../tables";
import type { FromWorker, ToWorker } from "./protocol";
import { TargetRunners } from "./targets";

declare const self: Worker;

const post = (message: FromWorker) => self.postMessage(message);
/** Where the HTTP thread's messages go once the loop is up (until then, nowhere: init comes first). */
let handle: (message: ToWorker) => void = () => {};

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "init": {
      const { settings } = message;
      const log = createLogger(settings.logLevel, "worker", settings.logFormat);
      if (isPostgresUrl(settings.dbPath)) {
        // Messages that come before the node has connected wait for it, in order.
        const early: ToWorker[] = [];
        handle = (message) => early.push(message);
        // Loaded only here: a worker on SQLite never parses the PostgreSQL modules.
        import("./pg-node")
          .then(({ startPgNode }) => startPgNode(settings, post, log))
          .then((node) => {
            handle = (message) => node.handle(message as Exclude<ToWorker, { type: "init" }>);
            for (const message of early.splice(0)) handle(message);
            return node.stopped;
          })
          .catch((error) => log.error("job loop crashed", { error }))
          .finally(() => post({ type: "stopped" }));
        break;
      }
      const db = openDatabase(settings.dbPath, { durability: settings.durability });
      const runners = new TargetRunners(openJobTables(db, settings.fairShare).store, settings, post, log);
      handle = (message) => runners.handle(message as Exclude<ToWorker, { type: "init" }>);
      // The worker does most of the writing, so it keeps the WAL short too.
      const stopCheckpoints = startCheckpoints(db, settings.dbPath);
      runners
        .run(() => post({ type: "ready" }))
        .catch((error) => log.error("job loop crashed", { error }))
        .finally(() => {
          stopCheckpoints();
          db.close();
          post({ type: "stopped" });
        });
      break;
    }
    default:
      handle(message);
  }
};
