import { afterEach, describe, expect, test } from "bun:test";
import { until } from "../harness";
import { type InProcessStack, startInProcess } from "../in-process";
import { WebhookReceiver, newSecret } from "./receiver";

let stack: InProcessStack | undefined;
let receiver: WebhookReceiver | undefined;
afterEach(async () => {
  await stack?.stop();
  await receiver?.stop();
  stack = undefined;
});

// The receiver listens on loopback, which the default allow list (public addresses only) refuses.
const FAST_BACKOFF = { FOREMAN_WEBHOOK_BACKOFF: "50ms,100ms,150ms", FOREMAN_WEBHOOK_ALLOW: "127.0.0.1" };

async function submit(body: Record<string, unknown>) {
  const response = await stack!.fetch(`/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as { id: string; error?: string } };
}
const chat = (content: string, webhook: Record<string, unknown>) => ({
  type: "chat",
  request: { model: "llama3.2", messages: [{ role: "user", content }] },
  webhook,
});
const jobView = async (id: string) =>
  (await (await stack!.fetch(`/jobs/${id}`)).json()) as {
    state: string;
    webhook: { state: string; attempts: number; last_status: number | null };
  };

describe("webhooks (Standard Webhooks)", () => {
  test("signed with the job's secret, retried after failures, verified by the standardwebhooks package", async () => {
    const secret = newSecret();
    receiver = new WebhookReceiver(secret).start();
    receiver.failFirstAttempts = 2;
    stack = await startInProcess({ env: FAST_BACKOFF });
    const { body } = await submit(chat("hook me", { url: receiver.url, secret }));
    await until(() => receiver!.received.length === 1, 10_000, "the delivery");
    const [delivery] = receiver.received;
    expect(delivery!.verified).toBe(true);
    expect(delivery!.body.type).toBe("job.done");
    expect(delivery!.body.data).toMatchObject({
      id: body.id,
      state: "done",
      result: { message: { content: "You said: hook me" } },
    });
    expect(JSON.stringify(delivery!.body)).not.toContain(secret);
    await until(async () => (await jobView(body.id)).webhook.state === "delivered", 5000, "the delivery to be recorded");
    expect((await jobView(body.id)).webhook).toMatchObject({ state: "delivered", attempts: 3, last_status: 204 });
  });

  test("FOREMAN_WEBHOOK_SECRET signs jobs without their own; no secret at all sends it unsigned", async () => {
    const secret = newSecret();
    receiver = new WebhookReceiver(secret).start();
    stack = await startInProcess({ env: { ...FAST_BACKOFF, FOREMAN_WEBHOOK_SECRET: secret } });
    await submit(chat("default secret", { url: receiver.url }));
    await until(() => receiver!.received.length === 1, 10_000, "the delivery");
    expect(receiver.received[0]!.verified).toBe(true);
    await stack.stop();
    await receiver.stop();

    receiver = new WebhookReceiver().start();
    stack = await startInProcess({ env: FAST_BACKOFF });
    await submit(chat("unsigned", { url: receiver.url }));
    await until(() => receiver!.received.length === 1, 10_000, "the delivery");
    expect(receiver.received[0]!.signed).toBe(false);
  });

  test("failed and canceled jobs send job.failed and job.canceled", async () => {
    receiver = new WebhookReceiver().start();
    stack = await startInProcess({ env: FAST_BACKOFF });
    stack.fake.failures.push({ kind: "status", status: 500, error: "model crashed" });
    const failed = await submit(chat("fail", { url: receiver.url }));
    await until(() => receiver!.received.length === 1, 10_000, "the failure delivery");
    expect(receiver.received[0]!.body).toMatchObject({
      type: "job.failed",
      data: { id: failed.body.id, state: "failed", error: "model crashed" },
    });
    stack.fake.hold();
    const arrived = stack.fake.nextArrival();
    const running = await submit(chat("a b c d e f", { url: receiver.url }));
    await arrived;
    await stack!.fetch(`/jobs/${running.body.id}`, { method: "DELETE" });
    await until(() => receiver!.received.length === 2, 10_000, "the cancel delivery");
    expect(receiver.received[1]!.body).toMatchObject({ type: "job.canceled", data: { id: running.body.id, state: "canceled" } });
  });

  test("410 stops retrying; a redirect is not followed; the schedule's end fails it; the job is untouched", async () => {
    receiver = new WebhookReceiver().start();
    stack = await startInProcess({ env: FAST_BACKOFF });
    receiver.script = [410];
    const gone = await submit(chat("gone", { url: receiver.url }));
    await until(async () => (await jobView(gone.body.id)).webhook.state === "failed", 10_000, "410 to stop it");
    expect((await jobView(gone.body.id)).webhook).toMatchObject({ attempts: 1, last_status: 410 });
    expect((await jobView(gone.body.id)).state).toBe("done");

    receiver.script = [302, 302, 302, 302];
    const moved = await submit(chat("moved", { url: receiver.url }));
    await until(async () => (await jobView(moved.body.id)).webhook.state === "failed", 10_000, "the schedule to run out");
    expect((await jobView(moved.body.id)).webhook).toMatchObject({ attempts: 4, last_status: 302 });
    expect(receiver.received.length).toBe(0);
  });

  test("FOREMAN_WEBHOOK_ALLOW restricts where webhooks may go", async () => {
    stack = await startInProcess({ env: { FOREMAN_WEBHOOK_ALLOW: "hooks.example.com, 10.0.0.0/8, ::1" } });
    expect((await submit(chat("x", { url: "https://hooks.example.com/x" }))).status).toBe(202);
    expect((await submit(chat("x", { url: "http://10.2.3.4:9000/x" }))).status).toBe(202);
    expect((await submit(chat("x", { url: "http://[::1]:9000/x" }))).status).toBe(202);
    const refused = await submit(chat("x", { url: "http://127.0.0.1:9000/x" }));
    expect(refused.status).toBe(400);
    expect(refused.body.error).toContain("FOREMAN_WEBHOOK_ALLOW");
  });
});
