// The Files API's guards, in process: FOREMAN_MAX_FILES_BYTES bounds all stored files together, and a file
// a batch reads or writes cannot be deleted until the batch has ended.
import { afterEach, expect, test } from "bun:test";
import { type InProcessStack, startInProcess } from "../in-process";
import { until } from "../harness";

let stack: InProcessStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function upload(text: string) {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([text]), "in.jsonl");
  return stack!.handle(new Request("http://foreman/v1/files", { method: "POST", body: form }));
}

const line = (id: string) =>
  JSON.stringify({
    custom_id: id,
    method: "POST",
    url: "/v1/chat/completions",
    body: { model: "llama3.2", messages: [{ role: "user", content: id }] },
  });

test("uploads past FOREMAN_MAX_FILES_BYTES are a 413 naming the setting and the room left; deleting makes room", async () => {
  stack = await startInProcess({ env: { FOREMAN_MAX_FILES_BYTES: "2500000" } });
  const file = "x".repeat(1_000_000);
  const first = await upload(file);
  const second = await upload(file);
  expect([first.status, second.status]).toEqual([200, 200]);
  const third = await upload(file);
  expect(third.status).toBe(413);
  const error = (await third.json()).error;
  expect(error.type).toBe("invalid_request_error");
  expect(error.message).toContain("FOREMAN_MAX_FILES_BYTES is 2500000 bytes and 500000 bytes were free");
  // The refused upload left nothing behind, and deleting a file makes room again.
  const listed = (await (await stack.request("GET", "/v1/files")).json()).data;
  expect(listed).toHaveLength(2);
  expect((await stack.request("DELETE", `/v1/files/${listed[0].id}`)).status).toBe(200);
  expect((await upload(file)).status).toBe(200);
});

test("a running batch's input, output and error files are a 409 naming the batch; once it ends they may go", async () => {
  // Slow tokens keep the batch running while its files are tried.
  stack = await startInProcess({ fake: { tokenDelayMs: 300 } });
  const input = await (await upload([line("a"), line("b"), line("c"), line("d")].join("\n"))).json();
  const created = await stack.request("POST", "/v1/batches", {
    input_file_id: input.id,
    endpoint: "/v1/chat/completions",
    completion_window: "24h",
  });
  let batch = await created.json();
  // Once a line has finished, the output file is shown while the rest still run.
  await until(async () => {
    batch = await (await stack!.request("GET", `/v1/batches/${batch.id}`)).json();
    return batch.output_file_id !== null;
  }, 30_000);
  expect(batch.status).toBe("in_progress");
  for (const id of [batch.input_file_id, batch.output_file_id]) {
    const refused = await stack.request("DELETE", `/v1/files/${id}`);
    expect(refused.status).toBe(409);
    const error = (await refused.json()).error;
    expect(error.type).toBe("invalid_request_error");
    expect(error.message).toContain(`used by batch ${batch.id}`);
  }
  let ended: any;
  await until(async () => {
    ended = await (await stack!.request("GET", `/v1/batches/${batch.id}`)).json();
    return ended.status === "completed";
  }, 30_000);
  for (const id of [ended.input_file_id, ended.output_file_id]) {
    expect((await stack.request("DELETE", `/v1/files/${id}`)).status).toBe(200);
  }
  // The completed batch still names its output; reading it is a clean 404.
  const content = await stack.request("GET", `/v1/files/${ended.output_file_id}/content`);
  expect(content.status).toBe(404);
  expect((await content.json()).error.message).toContain("No such File object");
});
