// The start-up warning for an open-file limit too low for FOREMAN_MAX_CONNECTIONS; the bound itself is
// tested on raw sockets against the binary (test/e2e/connections.test.ts).
import { expect, test } from "bun:test";
import { openFileLimit, warnIfFewDescriptors } from "../../src/http/connection-limit";
import { capturingLogger } from "../in-process";

test("warns, with what fits, only when three descriptors per connection and the reserve exceed the limit", () => {
  const lines: string[] = [];
  const log = capturingLogger("http", lines);
  warnIfFewDescriptors(log, 1024, 4096);
  warnIfFewDescriptors(log, 1024, undefined);
  expect(lines).toEqual([]);
  warnIfFewDescriptors(log, 1024, 2048);
  expect(lines).toEqual([
    'WARN [http] the open-file limit is too low for FOREMAN_MAX_CONNECTIONS: a flood could starve the worker and the database {"open_file_limit":2048,"max_connections":1024,"fits":661}',
  ]);
});

test("the open-file limit is read from /proc on Linux", () => {
  if (process.platform === "linux") expect(openFileLimit()).toBeGreaterThan(0);
});
