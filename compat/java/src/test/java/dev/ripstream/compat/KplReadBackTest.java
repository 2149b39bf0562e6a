package dev.ripstream.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.coordinator.Scheduler;

/**
 * The records the KPL aggregated in {@link KplTest}, read back as user records by the KCL 3.x and by
 * Ripstream's own consumer ({@code ripstream tail --group}). Runs after KplTest in a JVM of its own
 * (the pom's kpl-readback execution), on a server started over the data KplTest's server left behind,
 * so what is read is exactly what the KPL wrote and the server stored.
 */
class KplReadBackTest {
    static RipstreamServer server;
    static String stream;
    static Set<String> sent;

    @BeforeAll
    static void start() throws Exception {
        Path records = KplTest.handoff().resolve("records.txt");
        assertTrue(Files.exists(records), "KplTest left no records at " + records + " (did it run and pass?)");
        List<String> lines = Files.readAllLines(records, StandardCharsets.UTF_8);
        stream = lines.get(0);
        sent = new HashSet<>(lines.subList(1, lines.size()));
        assertTrue(sent.size() > 100, "too few records handed over: " + sent.size());
        server = RipstreamServer.startIn(KplTest.handoff().resolve("server"), false, false);
        // KclTest's helpers (await) report this server's log.
        KclTest.server = server;
    }

    @AfterAll
    static void stop() {
        if (server != null) {
            server.close();
        }
    }

    @Test
    void theKclReadsTheKplsAggregatedRecordsAsUserRecords() throws Exception {
        String app = "kpl-kcl-" + UUID.randomUUID().toString().substring(0, 8);
        KclTest.Events events = new KclTest.Events();
        try (KinesisAsyncClient k = Clients.kinesisAsync(server);
                DynamoDbAsyncClient d = Clients.dynamoAsync(server);
                CloudWatchAsyncClient cw = CloudWatchAsyncClient.builder().endpointOverride(server.url)
                        .region(Region.US_EAST_1).credentialsProvider(Clients.CREDS).build()) {
            Scheduler scheduler = KclTest.scheduler(stream, app, events, k, d, cw, false);
            Thread t = new Thread(scheduler, "kcl-scheduler");
            t.setDaemon(true);
            t.start();
            try {
                KclTest.await("the KPL's user records through the KCL", Duration.ofSeconds(90),
                        () -> events.allData().containsAll(sent), events.log);
                // Nothing but the user records: an aggregate handed over whole would show up here.
                assertEquals(sent, events.allData());
                assertTrue(events.errors.isEmpty(), events.errors.toString());
            } finally {
                try {
                    scheduler.startGracefulShutdown().get(30, TimeUnit.SECONDS);
                } finally {
                    scheduler.shutdown();
                    t.join(30_000);
                }
            }
        }
    }

    @Test
    void ripstreamsConsumerReadsTheKplsAggregatedRecordsAsUserRecords() throws Exception {
        String group = "kpl-tail-" + UUID.randomUUID().toString().substring(0, 8);
        ProcessBuilder pb = new ProcessBuilder(RipstreamServer.binary(), "tail", "--group", group, stream,
                "--endpoint", server.url.toString(), "--region", "us-east-1")
                .redirectError(server.dir.resolve("tail.log").toFile());
        pb.environment().put("AWS_ACCESS_KEY_ID", "AKIDJAVAREADBACK");
        pb.environment().put("AWS_SECRET_ACCESS_KEY", "secret");
        Process tail = pb.start();
        Set<String> got = ConcurrentHashMap.newKeySet();
        Thread reader = new Thread(() -> {
            try (BufferedReader out = new BufferedReader(new InputStreamReader(tail.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = out.readLine()) != null) {
                    got.add(line);
                }
            } catch (java.io.IOException ignored) {
                // tail was stopped
            }
        }, "ripstream-tail");
        reader.setDaemon(true);
        reader.start();
        try {
            KclTest.await("the KPL's user records through ripstream tail --group", Duration.ofSeconds(60),
                    () -> got.containsAll(sent), "tail log: " + readQuietly(server.dir.resolve("tail.log")));
            assertEquals(sent, got);
        } finally {
            tail.destroy();
            if (!tail.waitFor(20, TimeUnit.SECONDS)) {
                tail.destroyForcibly();
            }
        }
    }

    static String readQuietly(Path p) {
        try {
            return Files.readString(p);
        } catch (java.io.IOException e) {
            return "<" + e + ">";
        }
    }
}
