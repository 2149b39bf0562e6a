// Enhanced fan-out with the JS SDK, shared by the cleartext and the signed suites.
import assert from "node:assert/strict";
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamConsumerCommand,
  DescribeStreamSummaryCommand,
  PutRecordCommand,
  RegisterStreamConsumerCommand,
  ResourceInUseException,
  SubscribeToShardCommand,
  paginateListStreamConsumers,
  waitUntilStreamExists,
} from "@aws-sdk/client-kinesis";
import { uniqueName } from "./server.mjs";

// Registers a consumer on a fresh one-shard stream, subscribes from
// TRIM_HORIZON and checks that records written before the subscription are
// delivered and records written while it is open are pushed.
export async function subscribeAndReceive(c) {
  const name = uniqueName("node-efo");
  await c.send(new CreateStreamCommand({ StreamName: name, ShardCount: 1 }));
  try {
    await waitUntilStreamExists({ client: c, maxWaitTime: 30, minDelay: 1, maxDelay: 1 }, { StreamName: name });
    const { StreamDescriptionSummary: s } = await c.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    const { Consumer } = await c.send(new RegisterStreamConsumerCommand({ StreamARN: s.StreamARN, ConsumerName: "node-efo" }));
    for (let i = 0; ; i++) {
      const d = await c.send(new DescribeStreamConsumerCommand({ ConsumerARN: Consumer.ConsumerARN }));
      if (d.ConsumerDescription.ConsumerStatus === "ACTIVE") break;
      assert.ok(i < 300, "the consumer becomes ACTIVE");
      await new Promise((r) => setTimeout(r, 100));
    }
    const names = [];
    for await (const page of paginateListStreamConsumers({ client: c }, { StreamARN: s.StreamARN })) {
      names.push(...page.Consumers.map((x) => x.ConsumerName));
    }
    assert.deepEqual(names, ["node-efo"]);

    const put = (data) => c.send(new PutRecordCommand({ StreamName: name, PartitionKey: data, Data: new TextEncoder().encode(data) }));
    for (let i = 0; i < 3; i++) await put(`before-${i}`);

    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 30_000);
    const out = await c.send(
      new SubscribeToShardCommand({
        ConsumerARN: Consumer.ConsumerARN, ShardId: "shardId-000000000000", StartingPosition: { Type: "TRIM_HORIZON" },
      }),
      { abortSignal: abort.signal },
    );
    const got = [];
    let continuation;
    let pushed = false;
    for await (const event of out.EventStream) {
      assert.ok(event.SubscribeToShardEvent, `unexpected event ${JSON.stringify(Object.keys(event))}`);
      const e = event.SubscribeToShardEvent;
      assert.equal(typeof e.MillisBehindLatest, "number");
      continuation = e.ContinuationSequenceNumber;
      got.push(...e.Records.map((r) => new TextDecoder().decode(r.Data)));
      if (got.length >= 3 && !pushed) {
        pushed = true;
        await put("during-0");
        await put("during-1");
      }
      if (got.length >= 5) break; // leaving the loop ends the subscription
    }
    clearTimeout(timer);
    assert.deepEqual(got, ["before-0", "before-1", "before-2", "during-0", "during-1"]);
    assert.equal(continuation.length, 56);

    // The same consumer on the same shard within 5 seconds is refused, as on AWS.
    await assert.rejects(
      c.send(
        new SubscribeToShardCommand({
          ConsumerARN: Consumer.ConsumerARN, ShardId: "shardId-000000000000",
          StartingPosition: { Type: "AFTER_SEQUENCE_NUMBER", SequenceNumber: continuation },
        }),
      ).then(async (o) => {
        for await (const _ of o.EventStream) {
          // the refusal may arrive as the stream's first event
        }
      }),
      ResourceInUseException,
    );
  } finally {
    await c.send(new DeleteStreamCommand({ StreamName: name, EnforceConsumerDeletion: true })).catch(() => {});
  }
}
