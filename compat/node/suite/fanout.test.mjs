// Enhanced fan-out with the JS SDK: its Kinesis client speaks HTTP/2
// (NodeHttp2Handler), over cleartext h2 against an http:// endpoint.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { kinesis, startServer } from "./server.mjs";
import { subscribeAndReceive } from "./efo.mjs";

let server;
let client;

before(async () => {
  server = await startServer();
  client = kinesis(server);
});

after(async () => {
  client?.destroy();
  await server?.stop();
});

test("SubscribeToShard event stream with for await over HTTP/2", async () => {
  // The client's default handler for Kinesis is the HTTP/2 one, as against AWS.
  const handler = await client.config.requestHandler;
  assert.equal(handler.constructor.name, "NodeHttp2Handler");
  await subscribeAndReceive(client);
});
