package dev.ripstream.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import com.amazonaws.auth.AWSStaticCredentialsProvider;
import com.amazonaws.auth.BasicAWSCredentials;
import com.amazonaws.services.kinesis.producer.KinesisProducer;
import com.amazonaws.services.kinesis.producer.KinesisProducerConfiguration;
import com.amazonaws.services.kinesis.producer.UserRecordResult;
import com.amazonaws.services.kinesis.producer.protobuf.Messages;
import com.google.common.util.concurrent.ListenableFuture;

import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;

/**
 * The Kinesis Producer Library: its native binary (shipped in the jar) over TLS to a server with a
 * self-signed certificate (VerifyCertificate false), aggregation on; read back with the SDK and
 * de-aggregated here (magic, protobuf, MD5), as the KCL would.
 */
class KplTest {
    static final byte[] MAGIC = {(byte) 0xF3, (byte) 0x89, (byte) 0x9A, (byte) 0xC2};
    static RipstreamServer server;
    static KinesisClient kinesis;

    /**
     * Where this test leaves its server's data for {@link KplReadBackTest}, which reads the KPL's records
     * back with the KCL 3.x and Ripstream's consumer in a JVM of its own (the KCL 3.x needs protobuf 4,
     * which the KPL cannot load).
     */
    static Path handoff() {
        return Path.of(System.getProperty("kpl.handoff", "target/kpl-handoff"));
    }

    @BeforeAll
    static void start() throws Exception {
        Path dir = handoff();
        if (Files.exists(dir)) {
            try (var paths = Files.walk(dir)) {
                paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
        server = RipstreamServer.startIn(dir.resolve("server"), true, true);
        kinesis = Clients.kinesis(server);
    }

    @AfterAll
    static void stop() {
        if (kinesis != null) {
            kinesis.close();
        }
        if (server != null) {
            server.close();
        }
    }

    @Test
    void aggregatedRecordsOverTlsAreReadBackWithSequenceNumbers() throws Exception {
        String stream = "kpl-" + UUID.randomUUID().toString().substring(0, 8);
        kinesis.createStream(r -> r.streamName(stream).shardCount(2));
        kinesis.waiter().waitUntilStreamExists(r -> r.streamName(stream));

        KinesisProducerConfiguration cfg = new KinesisProducerConfiguration()
                .setRegion("us-east-1")
                .setKinesisEndpoint(server.url.getHost())
                .setKinesisPort(server.url.getPort())
                .setVerifyCertificate(false)
                // Ripstream's own STS, on the same TLS port: the KPL asks it for the account.
                .setStsEndpoint(server.url.getHost())
                .setStsPort(server.url.getPort())
                .setCredentialsProvider(new AWSStaticCredentialsProvider(new BasicAWSCredentials("AKIDJAVAKPL", "secret")))
                // Ripstream serves no CloudWatch.
                .setMetricsLevel("none")
                .setAggregationEnabled(true)
                .setRecordMaxBufferedTime(200)
                .setRequestTimeout(10_000)
                .setLogLevel("warning")
                .setTempDirectory(Files.createDirectories(server.dir.resolve("kpl")).toString());
        KinesisProducer producer = new KinesisProducer(cfg);
        List<ListenableFuture<UserRecordResult>> futures = new ArrayList<>();
        Set<String> sent = new HashSet<>();
        try {
            // The KPL aggregates only once it has the stream's shard map (ListShards, fetched when
            // the stream's pipeline starts): records before that go out one per Kinesis record.
            String warm = "kpl-warm-up";
            sent.add(warm);
            assertTrue(producer.addUserRecord(stream, "key-0", ByteBuffer.wrap(warm.getBytes(StandardCharsets.UTF_8)))
                    .get(60, TimeUnit.SECONDS).isSuccessful());
            Thread.sleep(1000);
            for (int i = 0; i < 500; i++) {
                String v = "kpl-record-" + i;
                sent.add(v);
                futures.add(producer.addUserRecord(stream, "key-" + (i % 50),
                        ByteBuffer.wrap(v.getBytes(StandardCharsets.UTF_8))));
            }
            // flushSync() waits forever if the daemon dies; the futures below time out instead.
            producer.flush();
            for (ListenableFuture<UserRecordResult> f : futures) {
                UserRecordResult r = f.get(60, TimeUnit.SECONDS);
                assertTrue(r.isSuccessful(), "attempts: " + r.getAttempts().stream()
                        .map(a -> a.getErrorCode() + " " + a.getErrorMessage()).toList());
                assertTrue(r.getShardId().startsWith("shardId-"), r.getShardId());
            }
        } finally {
            producer.destroy();
        }
        // The account the KPL built the stream's ARN from came from Ripstream's STS.
        String metrics = get("/metrics");
        assertTrue(metrics.lines().anyMatch(l -> !l.startsWith("#") && l.contains("service=\"sts\"")
                && l.contains("operation=\"GetCallerIdentity\"")), metrics);

        List<Record> raw = new ArrayList<>();
        for (Shard shard : kinesis.listShards(r -> r.streamName(stream)).shards()) {
            String it = kinesis.getShardIterator(r -> r.streamName(stream).shardId(shard.shardId())
                    .shardIteratorType(ShardIteratorType.TRIM_HORIZON)).shardIterator();
            while (it != null) {
                String cur = it;
                GetRecordsResponse got = kinesis.getRecords(r -> r.shardIterator(cur));
                raw.addAll(got.records());
                if (got.records().isEmpty()) {
                    break;
                }
                it = got.nextShardIterator();
            }
        }
        assertTrue(raw.size() < 50, "not aggregated: " + raw.size() + " Kinesis records");
        // The KPL's aggregated format: magic, a protobuf AggregatedRecord, the MD5 of that protobuf.
        Set<String> got = new HashSet<>();
        int users = 0;
        for (Record r : raw) {
            byte[] data = r.data().asByteArray();
            if (!(data.length > 20 && Arrays.equals(Arrays.copyOf(data, 4), MAGIC))) {
                // Sent before the shard map was known: a plain record.
                got.add(new String(data, StandardCharsets.UTF_8));
                users++;
                continue;
            }
            byte[] body = Arrays.copyOfRange(data, 4, data.length - 16);
            byte[] digest = MessageDigest.getInstance("MD5").digest(body);
            assertTrue(Arrays.equals(digest, Arrays.copyOfRange(data, data.length - 16, data.length)), "bad MD5");
            Messages.AggregatedRecord agg = Messages.AggregatedRecord.parseFrom(body);
            for (Messages.Record u : agg.getRecordsList()) {
                String key = agg.getPartitionKeyTable((int) u.getPartitionKeyIndex());
                String v = u.getData().toStringUtf8();
                if (v.startsWith("kpl-record-")) {
                    assertEquals("key-" + (Integer.parseInt(v.substring("kpl-record-".length())) % 50), key);
                }
                got.add(v);
                users++;
            }
        }
        assertEquals(sent.size(), users);
        assertEquals(sent, got);
        // The stream stays, with the KPL's records as it stored them, for KplReadBackTest: its name on
        // the first line, then every user record sent.
        List<String> lines = new ArrayList<>();
        lines.add(stream);
        lines.addAll(sent);
        Files.write(handoff().resolve("records.txt"), lines, StandardCharsets.UTF_8);
    }

    /** What the KPL's daemon sends first when StsEndpoint points at Ripstream itself. */
    @Test
    void stsGetCallerIdentityIsServed() throws Exception {
        java.net.http.HttpClient http = java.net.http.HttpClient.newBuilder()
                .sslContext(trustAll()).build();
        java.net.http.HttpResponse<String> resp = http.send(java.net.http.HttpRequest.newBuilder(server.url.resolve("/"))
                .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
                // Anonymous mode takes any well-formed signature (no key is looked up), as the KPL sends one.
                .header("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request, "
                        + "SignedHeaders=content-type;host;x-amz-date, Signature=00")
                .header("X-Amz-Date", "20260101T000000Z")
                .POST(java.net.http.HttpRequest.BodyPublishers.ofString("Action=GetCallerIdentity&Version=2011-06-15"))
                .build(), java.net.http.HttpResponse.BodyHandlers.ofString());
        assertEquals(200, resp.statusCode(), resp.body());
        assertTrue(resp.headers().firstValue("content-type").orElse("").startsWith("text/xml"), resp.headers().toString());
        assertTrue(resp.body().startsWith("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"), resp.body());
        assertTrue(resp.body().contains("<Account>000000000000</Account>"), resp.body());
        assertTrue(resp.body().contains("<Arn>arn:aws:iam::000000000000:root</Arn>"), resp.body());
    }

    static String get(String path) throws Exception {
        java.net.http.HttpClient http = java.net.http.HttpClient.newBuilder()
                .sslContext(trustAll()).build();
        return http.send(java.net.http.HttpRequest.newBuilder(server.url.resolve(path)).GET().build(),
                java.net.http.HttpResponse.BodyHandlers.ofString()).body();
    }

    static javax.net.ssl.SSLContext trustAll() throws Exception {
        javax.net.ssl.TrustManager[] all = {new javax.net.ssl.X509TrustManager() {
            @Override
            public void checkClientTrusted(java.security.cert.X509Certificate[] c, String a) {}

            @Override
            public void checkServerTrusted(java.security.cert.X509Certificate[] c, String a) {}

            @Override
            public java.security.cert.X509Certificate[] getAcceptedIssuers() {
                return new java.security.cert.X509Certificate[0];
            }
        }};
        javax.net.ssl.SSLContext ctx = javax.net.ssl.SSLContext.getInstance("TLS");
        ctx.init(null, all, null);
        return ctx;
    }
}
