package dev.ripstream.compat;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.junit.jupiter.api.Test;

import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.dynamodb.model.AttributeValue;
import software.amazon.awssdk.services.kinesis.KinesisClient;

/**
 * The KCL's MultiLangDaemon (run with the multilang profile: its newest release on Maven Central,
 * with the KCL it was built with) driving a Python record processor written on amazon_kclpy, whose
 * sources run.sh fetches from PyPI ($KCLPY_PATH).
 */
class MultiLangTest {
    @Test
    void pythonRecordProcessorConsumesTwoShardsAndCheckpoints() throws Exception {
        String kclpy = System.getenv("KCLPY_PATH");
        assertTrue(kclpy != null && Files.isRegularFile(Path.of(kclpy, "amazon_kclpy", "kcl.py")),
                "KCLPY_PATH must name an unpacked amazon_kclpy (run.sh sets it): " + kclpy);
        try (RipstreamServer server = RipstreamServer.start();
                KinesisClient kinesis = Clients.kinesis(server);
                DynamoDbAsyncClient dynamo = Clients.dynamoAsync(server)) {
            String stream = "mld-" + UUID.randomUUID().toString().substring(0, 8);
            String app = "pyapp-" + UUID.randomUUID().toString().substring(0, 8);
            kinesis.createStream(r -> r.streamName(stream).shardCount(2));
            kinesis.waiter().waitUntilStreamExists(r -> r.streamName(stream));
            Set<String> sent = new HashSet<>();
            for (int i = 0; i < 20; i++) {
                String v = "py-" + i;
                kinesis.putRecord(r -> r.streamName(stream).partitionKey(v).data(SdkBytes.fromUtf8String(v)));
                sent.add(v);
            }

            Path script = server.dir.resolve("kclpy_processor.py");
            try (InputStream in = MultiLangTest.class.getResourceAsStream("/kclpy_processor.py")) {
                Files.copy(in, script);
            }
            Path out = server.dir.resolve("processed.txt");
            Files.createFile(out);
            Path props = server.dir.resolve("app.properties");
            Files.writeString(props, String.join("\n",
                    "executableName = python3 " + script,
                    "streamName = " + stream,
                    "applicationName = " + app,
                    "regionName = us-east-1",
                    "kinesisEndpoint = " + server.url,
                    "dynamoDBEndpoint = " + server.url,
                    "AwsCredentialsProvider = DefaultCredentialsProvider",
                    "metricsLevel = NONE",
                    "initialPositionInStream = TRIM_HORIZON",
                    "processingLanguage = python/3",
                    "failoverTimeMillis = 3000",
                    "idleTimeBetweenReadsInMillis = 250",
                    "") );
            Path log = server.dir.resolve("daemon.log");
            ProcessBuilder pb = new ProcessBuilder(List.of("java",
                    "-Dorg.slf4j.simpleLogger.showDateTime=true", "-cp", System.getProperty("surefire.test.class.path"),
                    "software.amazon.kinesis.multilang.MultiLangDaemon", "--properties-file", props.toString()))
                    .redirectErrorStream(true).redirectOutput(log.toFile());
            Map<String, String> env = pb.environment();
            env.put("AWS_ACCESS_KEY_ID", "AKIDJAVAMULTILANG");
            env.put("AWS_SECRET_ACCESS_KEY", "secret");
            env.put("AWS_REGION", "us-east-1");
            env.put("PYTHONPATH", kclpy);
            env.put("KCLPY_OUT", out.toString());
            Process daemon = pb.start();
            try {
                await("the Python processor's records", Duration.ofSeconds(150), () -> {
                    try {
                        Set<String> got = new HashSet<>();
                        for (String line : Files.readAllLines(out)) {
                            got.add(line.substring(line.indexOf(' ') + 1));
                        }
                        return got.containsAll(sent);
                    } catch (Exception e) {
                        return false;
                    }
                }, daemon, log);
                await("the Python processor's checkpoints", Duration.ofSeconds(30), () -> {
                    try {
                        long n = 0;
                        for (Map<String, AttributeValue> item : dynamo.scan(r -> r.tableName(app))
                                .get(30, TimeUnit.SECONDS).items()) {
                            if (item.get("leaseKey").s().startsWith("shardId-")
                                    && item.get("checkpoint").s().matches("[0-9]+")) {
                                n++;
                            }
                        }
                        return n == 2;
                    } catch (Exception e) {
                        return false;
                    }
                }, daemon, log);
                // KCL 3.1 keeps the coordinator's state (the leader lock, the client version) and the
                // workers' metrics in tables of their own, <app>-CoordinatorState and <app>-WorkerMetricStats
                // (3.5 keeps them in the lease table): both on Ripstream's DynamoDB subset.
                await("the KCL 3.x coordinator state and worker metrics", Duration.ofSeconds(60), () -> {
                    try {
                        Set<String> tables = new HashSet<>(dynamo.listTables().get(30, TimeUnit.SECONDS).tableNames());
                        Set<String> keys = new HashSet<>();
                        boolean metrics = false;
                        for (String table : tables) {
                            for (Map<String, AttributeValue> item : dynamo.scan(r -> r.tableName(table))
                                    .get(30, TimeUnit.SECONDS).items()) {
                                item.values().forEach(v -> {
                                    if (v.s() != null) {
                                        keys.add(v.s());
                                    }
                                });
                                metrics |= item.containsKey("lut") && item.containsKey("sts");
                            }
                        }
                        return keys.contains("Leader") && keys.contains("Migration3.0") && metrics;
                    } catch (Exception e) {
                        return false;
                    }
                }, daemon, log);
                Set<String> tables = new HashSet<>(dynamo.listTables().get(30, TimeUnit.SECONDS).tableNames());
                System.out.println("MultiLangDaemon tables: " + tables);
                assertTrue(tables.containsAll(Set.of(app, app + "-CoordinatorState", app + "-WorkerMetricStats")),
                        "tables: " + tables);
                assertFalse(Files.readString(log).contains("Exception in thread"), tail(log));
            } finally {
                daemon.descendants().forEach(ProcessHandle::destroyForcibly);
                daemon.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
            }
        }
    }

    static void await(String what, Duration timeout, BooleanSupplier cond, Process daemon, Path log) throws Exception {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline || !daemon.isAlive()) {
                fail("waiting for " + what + (daemon.isAlive() ? ": timed out" : ": the daemon exited")
                        + "\ndaemon log tail:\n" + tail(log));
            }
            Thread.sleep(250);
        }
    }

    static String tail(Path log) {
        try {
            String s = Files.readString(log);
            return s.length() > 8000 ? s.substring(s.length() - 8000) : s;
        } catch (Exception e) {
            return "<" + e + ">";
        }
    }
}
