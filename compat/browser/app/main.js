// The browser app: the AWS SDK for JavaScript v3 (its browser build, which
// signs with SigV4 and sends through fetch) puts records into a stream on
// another origin and reads them back, showing every step in the page.
import {
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  PutRecordCommand,
  PutRecordsCommand,
  waitUntilStreamExists,
} from "@aws-sdk/client-kinesis";

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

// One line per call: the operation, its HTTP status and the ids AWS sends
// in response headers. A cross-origin page sees those headers only if the
// server names them in Access-Control-Expose-Headers.
function showCall(operation, metadata, errorName) {
  const li = document.createElement("li");
  li.dataset.operation = operation;
  li.dataset.status = String(metadata?.httpStatusCode ?? "");
  li.dataset.requestId = metadata?.requestId ?? "";
  li.dataset.extendedRequestId = metadata?.extendedRequestId ?? "";
  if (errorName) li.dataset.error = errorName;
  li.textContent = `${operation}: HTTP ${li.dataset.status}${errorName ? ` ${errorName}` : ""}, request id ${li.dataset.requestId || "(not visible)"}`;
  $("calls").append(li);
}

function showRecord(record) {
  const tr = document.createElement("tr");
  for (const [cls, text] of [
    ["seq", record.SequenceNumber],
    ["key", record.PartitionKey],
    ["data", decoder.decode(record.Data)],
  ]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.append(td);
  }
  $("read").tBodies[0].append(tr);
}

async function call(client, operation, command) {
  const out = await client.send(command);
  showCall(operation, out.$metadata);
  return out;
}

async function run(endpoint, stream, records) {
  const client = new KinesisClient({
    endpoint,
    region: "us-east-1",
    // Static keys: the browser SDK signs every request with them.
    credentials: { accessKeyId: "AKIDBROWSERAPP", secretAccessKey: "browser-app-secret" },
    maxAttempts: 6,
  });
  await call(client, "CreateStream", new CreateStreamCommand({ StreamName: stream, ShardCount: 1 }));
  $("status").value = "waiting for ACTIVE";
  await waitUntilStreamExists({ client, maxWaitTime: 60, minDelay: 1, maxDelay: 2 }, { StreamName: stream });
  const summary = await call(client, "DescribeStreamSummary", new DescribeStreamSummaryCommand({ StreamName: stream }));
  if (summary.StreamDescriptionSummary.StreamStatus !== "ACTIVE") {
    throw new Error(`stream is ${summary.StreamDescriptionSummary.StreamStatus} after the waiter`);
  }

  $("status").value = "putting";
  const [first, ...rest] = records;
  const put = await call(
    client,
    "PutRecord",
    new PutRecordCommand({ StreamName: stream, PartitionKey: first.partitionKey, Data: encoder.encode(first.data) }),
  );
  const batch = await call(
    client,
    "PutRecords",
    new PutRecordsCommand({
      StreamName: stream,
      Records: rest.map((r) => ({ PartitionKey: r.partitionKey, Data: encoder.encode(r.data) })),
    }),
  );
  if (batch.FailedRecordCount) throw new Error(`PutRecords: ${batch.FailedRecordCount} records failed`);

  $("status").value = "reading";
  let iterator = (
    await call(
      client,
      "GetShardIterator",
      new GetShardIteratorCommand({ StreamName: stream, ShardId: put.ShardId, ShardIteratorType: "TRIM_HORIZON" }),
    )
  ).ShardIterator;
  let read = 0;
  for (let attempt = 0; read < records.length && attempt < 20; attempt++) {
    const out = await call(client, "GetRecords", new GetRecordsCommand({ ShardIterator: iterator }));
    for (const record of out.Records) showRecord(record);
    read += out.Records.length;
    iterator = out.NextShardIterator;
  }

  // An AWS error reaches a cross-origin page too: its response carries the
  // CORS headers, so the SDK sees the error type instead of a failed fetch.
  try {
    await client.send(new DescribeStreamSummaryCommand({ StreamName: `${stream}-missing` }));
    showCall("DescribeStreamSummary (missing)", undefined, "no error");
  } catch (e) {
    showCall("DescribeStreamSummary (missing)", e.$metadata, e.name);
  }
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  $("run").disabled = true;
  $("status").value = "running";
  run($("endpoint").value, $("stream").value, JSON.parse($("records").value)).then(
    () => {
      $("status").value = "done";
    },
    (e) => {
      $("status").value = `failed: ${e.name}: ${e.message}`;
      console.error(e);
    },
  );
});
