package dev.ripstream.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import software.amazon.awssdk.awscore.exception.AwsServiceException;
import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.ConsumerStatus;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.InvalidArgumentException;
import software.amazon.awssdk.services.kinesis.model.ListShardsResponse;
import software.amazon.awssdk.services.kinesis.model.PutRecordResponse;
import software.amazon.awssdk.services.kinesis.model.PutRecordsRequestEntry;
import software.amazon.awssdk.services.kinesis.model.PutRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.ResourceInUseException;
import software.amazon.awssdk.services.kinesis.model.ResourceNotFoundException;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardFilterType;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;
import software.amazon.awssdk.services.kinesis.model.StreamStatus;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardEvent;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardEventStream;
import software.amazon.awssdk.services.kinesis.model.SubscribeToShardResponseHandler;

/** The AWS SDK for Java v2 (CBOR by default) against plain HTTP, and SubscribeToShard over TLS + h2. */
class SdkKinesisTest {
    static RipstreamServer plain;
    static RipstreamServer tls;
    static Clients.ContentTypes contentTypes = new Clients.ContentTypes();
    static KinesisClient kinesis;

    @BeforeAll
    static void start() throws Exception {
        plain = RipstreamServer.start();
        tls = RipstreamServer.start(true);
        kinesis = Clients.kinesis(plain, contentTypes);
    }

    @AfterAll
    static void stop() {
        if (kinesis != null) {
            kinesis.close();
        }
        if (plain != null) {
            plain.close();
        }
        if (tls != null) {
            tls.close();
        }
    }

    static String newStream(KinesisClient k, int shards) {
        String name = "java-" + UUID.randomUUID().toString().substring(0, 8);
        k.createStream(r -> r.streamName(name).shardCount(shards));
        k.waiter().waitUntilStreamExists(r -> r.streamName(name));
        return name;
    }

    @Test
    void speaksCborAndRoundTripsRecords() {
        String name = newStream(kinesis, 2);
        assertEquals(StreamStatus.ACTIVE,
                kinesis.describeStreamSummary(r -> r.streamName(name)).streamDescriptionSummary().streamStatus());

        Instant before = Instant.now().minusSeconds(60);
        PutRecordResponse one = kinesis.putRecord(r -> r.streamName(name).partitionKey("k1")
                .data(SdkBytes.fromUtf8String("hello")));
        assertNotNull(one.sequenceNumber());
        assertTrue(one.shardId().startsWith("shardId-"));

        List<PutRecordsRequestEntry> entries = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            entries.add(PutRecordsRequestEntry.builder().partitionKey("key-" + i)
                    .data(SdkBytes.fromByteArray(new byte[] {(byte) i, 0, (byte) 0xff})).build());
        }
        PutRecordsResponse batch = kinesis.putRecords(r -> r.streamName(name).records(entries));
        assertEquals(0, batch.failedRecordCount());
        assertEquals(20, batch.records().size());

        ListShardsResponse shards = kinesis.listShards(r -> r.streamName(name));
        assertEquals(2, shards.shards().size());
        // Paging with MaxResults and the NextToken.
        ListShardsResponse page1 = kinesis.listShards(r -> r.streamName(name).maxResults(1));
        assertEquals(1, page1.shards().size());
        ListShardsResponse page2 = kinesis.listShards(r -> r.nextToken(page1.nextToken()));
        assertEquals(1, page2.shards().size());
        assertFalse(page1.shards().get(0).shardId().equals(page2.shards().get(0).shardId()));
        assertEquals(2, kinesis.listShards(r -> r.streamName(name)
                .shardFilter(f -> f.type(ShardFilterType.AT_LATEST))).shards().size());

        int total = 0;
        boolean sawHello = false;
        for (Shard shard : shards.shards()) {
            String it = kinesis.getShardIterator(r -> r.streamName(name).shardId(shard.shardId())
                    .shardIteratorType(ShardIteratorType.TRIM_HORIZON)).shardIterator();
            GetRecordsResponse got = kinesis.getRecords(r -> r.shardIterator(it).limit(100));
            assertNotNull(got.nextShardIterator());
            assertEquals(0L, got.millisBehindLatest());
            for (Record rec : got.records()) {
                total++;
                // Timestamps travel as CBOR tag 1; a wrong unit would land decades away.
                Instant at = rec.approximateArrivalTimestamp();
                assertTrue(at.isAfter(before) && at.isBefore(Instant.now().plusSeconds(60)), at.toString());
                if (rec.partitionKey().equals("k1")) {
                    assertEquals("hello", rec.data().asUtf8String());
                    assertEquals(one.sequenceNumber(), rec.sequenceNumber());
                    sawHello = true;
                }
            }
        }
        assertEquals(21, total);
        assertTrue(sawHello);

        // AT_SEQUENCE_NUMBER gets the same record back.
        String at = kinesis.getShardIterator(r -> r.streamName(name).shardId(one.shardId())
                .shardIteratorType(ShardIteratorType.AT_SEQUENCE_NUMBER)
                .startingSequenceNumber(one.sequenceNumber())).shardIterator();
        assertEquals(one.sequenceNumber(), kinesis.getRecords(r -> r.shardIterator(at)).records().get(0).sequenceNumber());

        assertFalse(contentTypes.seen.isEmpty());
        for (String ct : contentTypes.seen) {
            assertEquals("application/x-amz-cbor-1.1", ct);
        }
        kinesis.deleteStream(r -> r.streamName(name));
    }

    @Test
    void errorsAreTheModeledExceptions() {
        ResourceNotFoundException missing = assertThrows(ResourceNotFoundException.class,
                () -> kinesis.describeStream(r -> r.streamName("java-no-such-stream")));
        assertEquals(400, missing.statusCode());
        assertEquals("ResourceNotFoundException", missing.awsErrorDetails().errorCode());

        String name = newStream(kinesis, 1);
        assertThrows(ResourceInUseException.class,
                () -> kinesis.createStream(r -> r.streamName(name).shardCount(1)));
        assertThrows(ResourceNotFoundException.class, () -> kinesis.getShardIterator(r -> r.streamName(name)
                .shardId("shardId-000000000099").shardIteratorType(ShardIteratorType.TRIM_HORIZON)));
        assertThrows(InvalidArgumentException.class, () -> kinesis.getRecords(r -> r.shardIterator(
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")));
        // A hash key outside the key space.
        assertThrows(InvalidArgumentException.class, () -> kinesis.putRecord(r -> r.streamName(name)
                .partitionKey("k").explicitHashKey("340282366920938463463374607431768211456")
                .data(SdkBytes.fromUtf8String("x"))));
        // Model validation: the SDK does not check lengths itself, the server must.
        AwsServiceException bad = assertThrows(AwsServiceException.class,
                () -> kinesis.createStream(r -> r.streamName("no spaces allowed").shardCount(1)));
        assertEquals(400, bad.statusCode());
        assertEquals("ValidationException", bad.awsErrorDetails().errorCode(), bad.toString());
        kinesis.deleteStream(r -> r.streamName(name));
    }

    @Test
    void subscribeToShardOverTlsAndHttp2() throws Exception {
        try (KinesisClient k = Clients.kinesis(tls); KinesisAsyncClient async = Clients.kinesisAsync(tls)) {
            String name = newStream(k, 1);
            String arn = k.describeStreamSummary(r -> r.streamName(name)).streamDescriptionSummary().streamARN();
            String consumerArn = async.registerStreamConsumer(r -> r.streamARN(arn).consumerName("java-efo"))
                    .get(30, TimeUnit.SECONDS).consumer().consumerARN();
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (async.describeStreamConsumer(r -> r.consumerARN(consumerArn)).get(30, TimeUnit.SECONDS)
                    .consumerDescription().consumerStatus() != ConsumerStatus.ACTIVE) {
                assertTrue(System.nanoTime() < deadline, "consumer never became ACTIVE");
                Thread.sleep(100);
            }
            // Some records before the subscription, some while it is open.
            for (int i = 0; i < 5; i++) {
                int n = i;
                k.putRecord(r -> r.streamName(name).partitionKey("p").data(SdkBytes.fromUtf8String("before-" + n)));
            }
            Set<String> got = ConcurrentHashMap.newKeySet();
            CountDownLatch all = new CountDownLatch(1);
            CountDownLatch initial = new CountDownLatch(1);
            List<Throwable> errors = new java.util.concurrent.CopyOnWriteArrayList<>();
            SubscribeToShardResponseHandler handler = SubscribeToShardResponseHandler.builder()
                    .onResponse(resp -> initial.countDown())
                    .onError(errors::add)
                    .subscriber(SubscribeToShardResponseHandler.Visitor.builder()
                            .onSubscribeToShardEvent((SubscribeToShardEvent ev) -> {
                                for (Record r : ev.records()) {
                                    got.add(r.data().asString(StandardCharsets.UTF_8));
                                }
                                if (got.size() >= 10) {
                                    all.countDown();
                                }
                            }).build())
                    .build();
            CompletableFuture<Void> sub = async.subscribeToShard(r -> r.consumerARN(consumerArn)
                    .shardId("shardId-000000000000")
                    .startingPosition(p -> p.type(ShardIteratorType.TRIM_HORIZON)), handler);
            assertTrue(initial.await(30, TimeUnit.SECONDS), "no initial-response: " + errors);
            for (int i = 0; i < 5; i++) {
                int n = i;
                k.putRecord(r -> r.streamName(name).partitionKey("p").data(SdkBytes.fromUtf8String("after-" + n)));
            }
            assertTrue(all.await(30, TimeUnit.SECONDS), "pushed records missing, got " + got + " errors " + errors);
            Set<String> want = new HashSet<>();
            for (int i = 0; i < 5; i++) {
                want.add("before-" + i);
                want.add("after-" + i);
            }
            assertEquals(want, got);
            assertTrue(errors.isEmpty(), errors.toString());
            sub.cancel(true);
            async.deregisterStreamConsumer(r -> r.consumerARN(consumerArn)).get(30, TimeUnit.SECONDS);
            k.deleteStream(r -> r.streamName(name).enforceConsumerDeletion(true));
            assertNull(null);
        }
    }
}
