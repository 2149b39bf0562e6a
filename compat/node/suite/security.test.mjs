// SigV4 against a server started with a credentials file: the JS SDK loads
// the keys from a shared credentials file and profile, as against AWS.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccessDeniedException, CreateStreamCommand, KinesisClient, ListStreamsCommand } from "@aws-sdk/client-kinesis";
import { CreateTableCommand, DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { REGION, startServer, uniqueName } from "./server.mjs";
import { subscribeAndReceive } from "./efo.mjs";

const principals = `
[[principal]]
name = "admin"
access_key_id = "AKIDCOMPATNODEADMIN1"
secret_access_key = "compat-node-admin-secret"

[[principal]]
name = "writer"
access_key_id = "AKIDCOMPATNODEWRITE1"
secret_access_key = "compat-node-writer-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:PutRecord*", "kinesis:Describe*", "kinesis:List*"], "Resource": "*"}]}'''
`;

const profiles = `
[ripstream-admin]
aws_access_key_id = AKIDCOMPATNODEADMIN1
aws_secret_access_key = compat-node-admin-secret

[ripstream-writer]
aws_access_key_id = AKIDCOMPATNODEWRITE1
aws_secret_access_key = compat-node-writer-secret

[wrong-secret]
aws_access_key_id = AKIDCOMPATNODEADMIN1
aws_secret_access_key = not-the-secret

[unknown-key]
aws_access_key_id = AKIDNOBODYKNOWS00001
aws_secret_access_key = whatever
`;

const dir = mkdtempSync(join(tmpdir(), "ripstream-compat-node-creds-"));
writeFileSync(join(dir, "principals.toml"), principals);
writeFileSync(join(dir, "credentials"), profiles);
// This file runs in its own process: only its clients see these variables.
// Environment keys would win over the profile, and no real ~/.aws is read.
for (const v of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]) delete process.env[v];
process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, "credentials");
process.env.AWS_CONFIG_FILE = join(dir, "no-config");

let server;
const clients = [];
const kinesisFor = (profile, extra = {}) => {
  const c = new KinesisClient({ endpoint: server.url, region: REGION, profile, maxAttempts: 1, ...extra });
  clients.push(c);
  return c;
};

before(async () => {
  server = await startServer(["--credentials", join(dir, "principals.toml")]);
});

after(async () => {
  for (const c of clients) c.destroy();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("signed requests and a signed event stream", async () => {
  await subscribeAndReceive(kinesisFor("ripstream-admin", { maxAttempts: 6 }));
});

test("signed DynamoDB requests", async () => {
  const c = new DynamoDBClient({ endpoint: server.url, region: REGION, profile: "ripstream-admin" });
  clients.push(c);
  const name = uniqueName("node-signed");
  await c.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [{ AttributeName: "leaseKey", AttributeType: "S" }],
      KeySchema: [{ AttributeName: "leaseKey", KeyType: "HASH" }],
      BillingMode: "PAY_PER_REQUEST",
    }),
  );
  await c.send(new DeleteTableCommand({ TableName: name }));
});

test("a policy denies with AccessDeniedException", async () => {
  const writer = kinesisFor("ripstream-writer");
  await assert.rejects(writer.send(new CreateStreamCommand({ StreamName: uniqueName("denied"), ShardCount: 1 })), AccessDeniedException);
  await writer.send(new ListStreamsCommand({}));
});

const rejectsWith = (c, name) =>
  assert.rejects(c.send(new ListStreamsCommand({})), (err) => {
    assert.equal(err.name, name, err.message);
    assert.equal(err.$metadata.httpStatusCode >= 400, true);
    return true;
  });

test("a wrong secret is InvalidSignatureException", () => rejectsWith(kinesisFor("wrong-secret"), "InvalidSignatureException"));
test("an unknown key is UnrecognizedClientException", () => rejectsWith(kinesisFor("unknown-key"), "UnrecognizedClientException"));
test("a wrong region is InvalidSignatureException", () =>
  rejectsWith(kinesisFor("ripstream-admin", { region: "eu-west-1" }), "InvalidSignatureException"));
test("an unsigned request is MissingAuthenticationTokenException", async () => {
  // An anonymous identity: the SDK sends the request without signing it.
  const c = kinesisFor(undefined, { credentials: async () => ({ accessKeyId: "", secretAccessKey: "" }), signer: { sign: async (r) => r } });
  await rejectsWith(c, "MissingAuthenticationTokenException");
});
