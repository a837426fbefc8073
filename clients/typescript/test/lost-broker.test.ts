// A broker lost mid-call, against the harness of tests/support/harness.py (two brokers; the
// `thinker` model thinks 3 s upstream), which tests/integration/test_typescript_client.py
// runs this file against (EDGE_NATS_URL); without it the tests are skipped. The harness cuts
// the broker working on the call off; the client hears neither an answer nor a keepalive for
// attemptTimeoutMs and sends the call again under its id: the worker still running the first
// try answers it (a stream: it takes the retry in), so the upstream is called once.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { EdgeClient, type ChatBody } from "../src/index.js";

const url = process.env.EDGE_NATS_URL;

describe("a broker lost before the answer's first byte", { skip: url ? false : "EDGE_NATS_URL is not set" }, () => {
  let client: EdgeClient;

  before(async () => {
    client = await EdgeClient.connect(url ?? "", { attemptTimeoutMs: 1_000, backoffMs: 50, deadlineMs: 30_000 });
  });

  after(async () => {
    await client?.close();
  });

  async function harness(subject: string, body: unknown): Promise<Record<string, unknown>> {
    const reply = await client.nc.request(subject, new TextEncoder().encode(JSON.stringify(body)), { timeout: 20_000 });
    return JSON.parse(new TextDecoder().decode(reply.data)) as Record<string, unknown>;
  }

  const thinkerCalls = async () => (await harness("harness.calls", { fake: "thinker", after: -1 })).calls as number;
  const ask = (text: string): ChatBody => ({ model: "thinker", messages: [{ role: "user", content: `${text} ${Date.now()}` }] });

  async function loseTheBroker(before: number): Promise<void> {
    const answer = await harness("harness.lose-broker", { after: before });
    assert.equal(answer.lost, true, JSON.stringify(answer));
  }

  test("a stream is retried before its first chunk and joins the first try's upstream call", async () => {
    const before = await thinkerCalls();
    const reading = (async () => {
      let text = "";
      for await (const chunk of client.stream(ask("why, streamed?"))) text += chunk.choices[0]?.delta.content ?? "";
      return text;
    })();
    await loseTheBroker(before);
    assert.equal(await reading, "upstream streams to o3-deep");
    assert.equal(await thinkerCalls(), before + 1, "one upstream call");
  });

  test("a whole call whose reply was lost is answered from the first try's upstream call", async () => {
    const before = await thinkerCalls();
    const answering = client.chat(ask("why?"));
    await loseTheBroker(before);
    assert.equal((await answering).choices[0].message.content, "upstream says hi to o3-deep");
    assert.equal(await thinkerCalls(), before + 1, "one upstream call");
  });
});
