// AWS SDK for JavaScript v3 (@aws-sdk/client-kinesis) against the real server.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  InvalidArgumentException,
  ListShardsCommand,
  ListTagsForStreamCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  DryRunOperationException,
  KinesisServiceException,
  SplitShardCommand,
  paginateListStreams,
  waitUntilStreamExists,
  waitUntilStreamNotExists,
} from "@aws-sdk/client-kinesis";
import { kinesis, startServer, uniqueName } from "./server.mjs";

let server;
let client;
const created = [];

before(async () => {
  server = await startServer();
  client = kinesis(server);
});

after(async () => {
  for (const name of created) {
    await client.send(new DeleteStreamCommand({ StreamName: name, EnforceConsumerDeletion: true })).catch(() => {});
  }
  client?.destroy();
  await server?.stop();
});

const waiterOptions = (c) => ({ client: c, maxWaitTime: 30, minDelay: 1, maxDelay: 1 });

async function createStream(shards) {
  const name = uniqueName("node");
  await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: shards }));
  created.push(name);
  const result = await waitUntilStreamExists(waiterOptions(client), { StreamName: name });
  assert.equal(result.state, "SUCCESS");
  return name;
}

async function readShard(name, shardId) {
  let { ShardIterator: iterator } = await client.send(
    new GetShardIteratorCommand({ StreamName: name, ShardId: shardId, ShardIteratorType: "TRIM_HORIZON" }),
  );
  const records = [];
  while (iterator) {
    const out = await client.send(new GetRecordsCommand({ ShardIterator: iterator }));
    records.push(...out.Records);
    if (out.Records.length === 0) break;
    iterator = out.NextShardIterator;
  }
  return records;
}

test("create, describe and delete a stream with the waiters", async () => {
  const name = uniqueName("node-life");
  await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: 3, Tags: { team: "node" } }));
  await waitUntilStreamExists(waiterOptions(client), { StreamName: name });
  const { StreamDescription: d } = await client.send(new DescribeStreamCommand({ StreamName: name }));
  assert.equal(d.StreamStatus, "ACTIVE");
  assert.equal(d.Shards.length, 3);
  assert.equal(d.RetentionPeriodHours, 24);
  assert.match(d.StreamARN, /^arn:aws:kinesis:us-east-1:\d{12}:stream\//);
  assert.ok(d.StreamCreationTimestamp instanceof Date);
  assert.ok(Math.abs(Date.now() - d.StreamCreationTimestamp.getTime()) < 5 * 60_000, "creation timestamp is now");

  const { StreamDescriptionSummary: s } = await client.send(new DescribeStreamSummaryCommand({ StreamARN: d.StreamARN }));
  assert.equal(s.OpenShardCount, 3);
  assert.equal(s.StreamModeDetails.StreamMode, "PROVISIONED");
  const tags = await client.send(new ListTagsForStreamCommand({ StreamName: name }));
  assert.deepEqual(tags.Tags, [{ Key: "team", Value: "node" }]);

  await client.send(new DeleteStreamCommand({ StreamName: name }));
  const gone = await waitUntilStreamNotExists(waiterOptions(client), { StreamName: name });
  assert.equal(gone.state, "SUCCESS");
});

test("ListStreams paginator", async () => {
  const want = new Set([await createStream(1), await createStream(1), await createStream(1)]);
  let pages = 0;
  let found = 0;
  for await (const page of paginateListStreams({ client, pageSize: 1 }, {})) {
    pages++;
    assert.ok(page.StreamNames.length <= 1);
    assert.equal(page.StreamSummaries.length, page.StreamNames.length);
    found += page.StreamNames.filter((n) => want.has(n)).length;
    assert.ok(pages < 1000, "the paginator ends");
  }
  assert.equal(found, 3);
  assert.ok(pages >= 3);
});

// The JS SDK generates no ListShards paginator (NextToken excludes StreamName),
// so this is the documented NextToken loop.
test("ListShards pages with NextToken", async () => {
  const name = await createStream(5);
  const ids = [];
  let input = { StreamName: name, MaxResults: 2 };
  for (let pages = 0; ; pages++) {
    const out = await client.send(new ListShardsCommand(input));
    assert.ok(out.Shards.length <= 2);
    ids.push(...out.Shards.map((s) => s.ShardId));
    if (!out.NextToken) break;
    input = { NextToken: out.NextToken, MaxResults: 2 };
    assert.ok(pages < 10, "pagination ends");
  }
  assert.deepEqual(ids, [0, 1, 2, 3, 4].map((i) => `shardId-00000000000${i}`));
});

test("PutRecord, PutRecords, GetShardIterator and GetRecords", async () => {
  const name = await createStream(2);
  const one = await client.send(
    new PutRecordCommand({ StreamName: name, PartitionKey: "user-1", Data: new TextEncoder().encode('{"clicked": true}') }),
  );
  assert.equal(one.SequenceNumber.length, 56);
  assert.match(one.ShardId, /^shardId-/);

  const sent = new Map();
  const entries = [];
  for (let i = 0; i < 50; i++) {
    const data = new Uint8Array(i + 1).fill(i); // binary, not text
    sent.set(`key-${i}`, data);
    entries.push({ PartitionKey: `key-${i}`, Data: data });
  }
  const batch = await client.send(new PutRecordsCommand({ StreamName: name, Records: entries }));
  assert.equal(batch.FailedRecordCount ?? 0, 0);
  assert.equal(batch.Records.length, 50);

  const got = new Map();
  const { Shards } = await client.send(new ListShardsCommand({ StreamName: name }));
  for (const shard of Shards) {
    let last = -1n;
    for (const r of await readShard(name, shard.ShardId)) {
      const seq = BigInt(r.SequenceNumber);
      assert.ok(seq > last, "sequence numbers increase");
      last = seq;
      assert.ok(r.ApproximateArrivalTimestamp instanceof Date);
      assert.ok(Math.abs(Date.now() - r.ApproximateArrivalTimestamp.getTime()) < 5 * 60_000);
      assert.ok(r.Data instanceof Uint8Array);
      got.set(r.PartitionKey, r.Data);
    }
  }
  assert.equal(new TextDecoder().decode(got.get("user-1")), '{"clicked": true}');
  for (const [k, v] of sent) assert.deepEqual(Buffer.from(got.get(k)), Buffer.from(v), k);

  const at = await client.send(
    new GetShardIteratorCommand({
      StreamName: name, ShardId: one.ShardId, ShardIteratorType: "AT_SEQUENCE_NUMBER", StartingSequenceNumber: one.SequenceNumber,
    }),
  );
  const atRecs = await client.send(new GetRecordsCommand({ ShardIterator: at.ShardIterator, Limit: 1 }));
  assert.equal(atRecs.Records[0].SequenceNumber, one.SequenceNumber);
  const afterIt = await client.send(
    new GetShardIteratorCommand({
      StreamName: name, ShardId: one.ShardId, ShardIteratorType: "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber: one.SequenceNumber,
    }),
  );
  const afterRecs = await client.send(new GetRecordsCommand({ ShardIterator: afterIt.ShardIterator, Limit: 1 }));
  assert.notEqual(afterRecs.Records[0]?.SequenceNumber, one.SequenceNumber);

  const ts = await client.send(
    new GetShardIteratorCommand({
      StreamName: name, ShardId: one.ShardId, ShardIteratorType: "AT_TIMESTAMP", Timestamp: new Date(Date.now() - 3600_000),
    }),
  );
  const tsRecs = await client.send(new GetRecordsCommand({ ShardIterator: ts.ShardIterator }));
  assert.ok(tsRecs.Records.length > 0, "AT_TIMESTAMP an hour ago reads the records");

  const high = await client.send(
    new PutRecordCommand({
      StreamName: name, PartitionKey: "x", Data: new Uint8Array([1]), ExplicitHashKey: "340282366920938463463374607431768211455",
    }),
  );
  assert.equal(high.ShardId, "shardId-000000000001");
});

test("errors are the SDK's typed exceptions", async () => {
  await assert.rejects(client.send(new DescribeStreamCommand({ StreamName: uniqueName("missing") })), (err) => {
    assert.ok(err instanceof ResourceNotFoundException, `${err.name}: ${err.message}`);
    assert.ok(err instanceof KinesisServiceException);
    assert.equal(err.$fault, "client");
    assert.equal(err.$metadata.httpStatusCode, 400);
    assert.ok(err.$metadata.requestId, "x-amzn-RequestId is read");
    assert.match(err.message, /not found/);
    return true;
  });
  const name = await createStream(1);
  await assert.rejects(client.send(new CreateStreamCommand({ StreamName: name, ShardCount: 1 })), ResourceInUseException);
  await assert.rejects(
    client.send(
      new GetShardIteratorCommand({
        StreamName: name, ShardId: "shardId-000000000000", ShardIteratorType: "AT_SEQUENCE_NUMBER", StartingSequenceNumber: "12345",
      }),
    ),
    InvalidArgumentException,
  );
  await assert.rejects(client.send(new GetRecordsCommand({ ShardIterator: "AAAAAAAAAAAAAAAAnot-a-real-iterator" })), InvalidArgumentException);
  await assert.rejects(
    client.send(new SplitShardCommand({ StreamName: name, ShardToSplit: "shardId-000000000000", NewStartingHashKey: "0" })),
    InvalidArgumentException,
  );
  await assert.rejects(client.send(new CreateStreamCommand({ StreamName: "bad name!", ShardCount: 1 })), (err) => {
    assert.equal(err.name, "ValidationException");
    assert.equal(err.$fault, "client");
    return true;
  });
  await assert.rejects(
    client.send(new PutRecordCommand({ StreamName: name, PartitionKey: "k", Data: new Uint8Array([1]), DryRun: true })),
    DryRunOperationException,
  );
});

test("SplitShard and the lineage in ListShards and GetRecords", async () => {
  const name = await createStream(1);
  for (let i = 0; i < 5; i++) {
    await client.send(new PutRecordCommand({ StreamName: name, PartitionKey: `${i}`, Data: new TextEncoder().encode("before") }));
  }
  const mid = (1n << 127n).toString();
  await client.send(new SplitShardCommand({ StreamName: name, ShardToSplit: "shardId-000000000000", NewStartingHashKey: mid }));
  await waitUntilStreamExists(waiterOptions(client), { StreamName: name });

  const { Shards } = await client.send(new ListShardsCommand({ StreamName: name }));
  assert.equal(Shards.length, 3);
  const [parent, ...children] = Shards;
  assert.equal(parent.ShardId, "shardId-000000000000");
  assert.ok(parent.SequenceNumberRange.EndingSequenceNumber, "the parent is closed");
  for (const child of children) {
    assert.equal(child.ParentShardId, "shardId-000000000000");
    assert.equal(child.SequenceNumberRange.EndingSequenceNumber, undefined);
    assert.ok(BigInt(child.SequenceNumberRange.StartingSequenceNumber) > BigInt(parent.SequenceNumberRange.EndingSequenceNumber));
  }
  assert.equal(children[0].HashKeyRange.EndingHashKey, ((1n << 127n) - 1n).toString());
  assert.equal(children[1].HashKeyRange.StartingHashKey, mid);

  const latest = await client.send(new ListShardsCommand({ StreamName: name, ShardFilter: { Type: "AT_LATEST" } }));
  assert.equal(latest.Shards.length, 2);

  let { ShardIterator: iterator } = await client.send(
    new GetShardIteratorCommand({ StreamName: name, ShardId: parent.ShardId, ShardIteratorType: "TRIM_HORIZON" }),
  );
  let n = 0;
  let childShards;
  for (let i = 0; iterator && i < 20; i++) {
    const out = await client.send(new GetRecordsCommand({ ShardIterator: iterator }));
    n += out.Records.length;
    iterator = out.NextShardIterator;
    childShards = out.ChildShards;
  }
  assert.equal(iterator, undefined, "no iterator at the end of a closed shard");
  assert.equal(n, 5);
  assert.equal(childShards.length, 2);
  assert.deepEqual(childShards[0].ParentShards, ["shardId-000000000000"]);
});
