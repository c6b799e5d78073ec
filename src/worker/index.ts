/// <reference lib="webworker" />
// The worker thread's entry point: owns the job loop and the upstream fetch, talks only by postMessage.
import { createLogger } from "../log";
import { openDatabase, startCheckpoints } from "../queue/db";
import { openJobTables } from "../tables";
import type { FromWorker, ToWorker } from "./protocol";
import { TargetRunners } from "./targets";

declare const self: Worker;

const post = (message: FromWorker) => self.postMessage(message);
let runners: TargetRunners | undefined;

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "init": {
      const { settings } = message;
      const log = createLogger(settings.logLevel, "worker", settings.logFormat);
      const db = openDatabase(settings.dbPath, { durability: settings.durability });
      runners = new TargetRunners(openJobTables(db, settings.fairShare).store, settings, post, log);
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
      runners?.handle(message);
  }
};
