// @aws-sdk/client-dynamodb on a KCL-style lease table.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  GetItemCommand,
  PutItemCommand,
  ResourceNotFoundException,
  UpdateItemCommand,
  paginateListTables,
  paginateScan,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { dynamo, startServer, uniqueName } from "./server.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = dynamo(server);
});

after(async () => {
  client?.destroy();
  await server?.stop();
});

test("a lease table with conditional writes, paginators and typed errors", async () => {
  const table = uniqueName("node-leases");
  await client.send(
    new CreateTableCommand({
      TableName: table,
      AttributeDefinitions: [{ AttributeName: "leaseKey", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "leaseKey", KeyType: "HASH" }],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  try {
    const ready = await waitUntilTableExists({ client, maxWaitTime: 30, minDelay: 1, maxDelay: 1 }, { TableName: table });
    assert.equal(ready.state, "SUCCESS");
    const lease = {
      leaseKey: { S: "shardId-000000000000" },
      leaseOwner: { S: "worker-a" },
      leaseCounter: { N: "1" },
      checkpoint: { S: "TRIM_HORIZON" },
    };
    const put = () => client.send(new PutItemCommand({ TableName: table, Item: lease, ConditionExpression: "attribute_not_exists(leaseKey)" }));
    await put();
    await assert.rejects(put(), ConditionalCheckFailedException);

    const up = await client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { leaseKey: lease.leaseKey },
        UpdateExpression: "SET leaseCounter = leaseCounter + :one, leaseOwner = :b",
        ConditionExpression: "leaseCounter = :c",
        ExpressionAttributeValues: { ":one": { N: "1" }, ":c": { N: "1" }, ":b": { S: "worker-b" } },
        ReturnValues: "ALL_NEW",
      }),
    );
    assert.deepEqual(up.Attributes.leaseCounter, { N: "2" });
    const got = await client.send(new GetItemCommand({ TableName: table, Key: { leaseKey: lease.leaseKey }, ConsistentRead: true }));
    assert.deepEqual(got.Item.leaseOwner, { S: "worker-b" });

    for (const k of ["shardId-000000000001", "shardId-000000000002"]) {
      await client.send(new PutItemCommand({ TableName: table, Item: { leaseKey: { S: k } } }));
    }
    let items = 0;
    let pages = 0;
    for await (const page of paginateScan({ client, pageSize: 1 }, { TableName: table })) {
      items += page.Items.length;
      assert.ok(++pages < 10, "the Scan paginator ends");
    }
    assert.equal(items, 3);

    let found = false;
    for await (const page of paginateListTables({ client, pageSize: 1 }, {})) found ||= page.TableNames.includes(table);
    assert.ok(found, "ListTables paginator lists the table");

    await assert.rejects(client.send(new DescribeTableCommand({ TableName: uniqueName("no-table") })), ResourceNotFoundException);
  } finally {
    await client.send(new DeleteTableCommand({ TableName: table })).catch(() => {});
  }
});
