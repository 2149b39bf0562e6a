package dev.ripstream.compat.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.kinesis.sink.KinesisStreamsSink;
import org.apache.flink.connector.kinesis.source.KinesisStreamsSource;
import org.apache.flink.connector.kinesis.source.config.KinesisStreamsSourceConfigConstants;
import org.apache.flink.connector.kinesis.source.config.KinesisStreamsSourceConfigConstants.InitialPosition;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.runtime.testutils.MiniClusterResourceConfiguration;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.connectors.kinesis.FlinkKinesisConsumer;
import org.apache.flink.streaming.connectors.kinesis.config.AWSConfigConstants;
import org.apache.flink.streaming.connectors.kinesis.config.ConsumerConfigConstants;
import org.apache.flink.test.junit5.MiniClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.ripstream.compat.RipstreamServer;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.http.apache5.Apache5HttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.GetRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.PutRecordsRequestEntry;
import software.amazon.awssdk.services.kinesis.model.PutRecordsResponse;
import software.amazon.awssdk.services.kinesis.model.Record;
import software.amazon.awssdk.services.kinesis.model.Shard;
import software.amazon.awssdk.services.kinesis.model.ShardIteratorType;

/**
 * Apache Flink's Kinesis connector in a local mini-cluster: a source (the FLIP-27
 * KinesisStreamsSource, or the legacy FlinkKinesisConsumer polling or with enhanced fan-out) reads
 * one ripstream stream, a map uppercases each record and KinesisStreamsSink writes another; the
 * SDK reads that one back.
 */
class FlinkKinesisTest {
    static final int RECORDS = 200;
    static final String ACCESS_KEY = "AKIDFLINKCOMPAT";
    static final String SECRET_KEY = "secret";

    /** A JobManager and one TaskManager with two slots: one source reader per input shard. */
    @RegisterExtension
    static final MiniClusterExtension FLINK = new MiniClusterExtension(
            new MiniClusterResourceConfiguration.Builder()
                    .setNumberTaskManagers(1)
                    .setNumberSlotsPerTaskManager(2)
                    .build());

    /** A named class, not a lambda: Flink extracts the output type from its signature. */
    static final class Upper implements MapFunction<String, String> {
        @Override
        public String map(String value) {
            return value.toUpperCase(Locale.ROOT);
        }
    }

    /** The connector's client settings: the ripstream endpoint in cleartext, static credentials. */
    static Map<String, String> awsSettings(RipstreamServer server) {
        Map<String, String> m = new HashMap<>();
        m.put(AWSConfigConstants.AWS_ENDPOINT, server.url.toString());
        m.put(AWSConfigConstants.AWS_REGION, "us-east-1");
        m.put(AWSConfigConstants.AWS_CREDENTIALS_PROVIDER, "BASIC");
        m.put(AWSConfigConstants.accessKeyId(AWSConfigConstants.AWS_CREDENTIALS_PROVIDER), ACCESS_KEY);
        m.put(AWSConfigConstants.secretKey(AWSConfigConstants.AWS_CREDENTIALS_PROVIDER), SECRET_KEY);
        return m;
    }

    static KinesisClient sdk(RipstreamServer server) {
        return KinesisClient.builder()
                .endpointOverride(server.url)
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create(ACCESS_KEY, SECRET_KEY)))
                .httpClient(Apache5HttpClient.builder().build())
                .overrideConfiguration(c -> c.apiCallTimeout(Duration.ofSeconds(30)))
                .build();
    }

    static String createStream(KinesisClient k, String prefix, int shards) {
        String name = prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
        k.createStream(r -> r.streamName(name).shardCount(shards));
        k.waiter().waitUntilStreamExists(r -> r.streamName(name));
        return name;
    }

    /** Every record of every shard from the start, until want are seen or the deadline passes. */
    static List<String> readAll(KinesisClient k, String stream, int want, Instant deadline) throws InterruptedException {
        List<String> iterators = new ArrayList<>();
        for (Shard s : k.listShards(r -> r.streamName(stream)).shards()) {
            iterators.add(k.getShardIterator(r -> r.streamName(stream).shardId(s.shardId())
                    .shardIteratorType(ShardIteratorType.TRIM_HORIZON)).shardIterator());
        }
        List<String> seen = new ArrayList<>();
        while (seen.size() < want && Instant.now().isBefore(deadline)) {
            for (int i = 0; i < iterators.size(); i++) {
                String it = iterators.get(i);
                GetRecordsResponse resp = k.getRecords(r -> r.shardIterator(it));
                for (Record rec : resp.records()) {
                    seen.add(rec.data().asUtf8String());
                }
                iterators.set(i, resp.nextShardIterator());
            }
            TimeUnit.MILLISECONDS.sleep(250);
        }
        return seen;
    }

    /** The input stream of one test, its name and ARN. */
    record Input(RipstreamServer server, String name, String arn) {}

    /** FLIP-27: KinesisStreamsSource, polling GetRecords. */
    @Test
    void kinesisStreamsSource() throws Exception {
        pipeline((env, in) -> {
            Configuration sourceConfig = new Configuration();
            awsSettings(in.server()).forEach(sourceConfig::setString);
            // Each shard from its first record (the default is LATEST, which would skip what is there).
            sourceConfig.set(KinesisStreamsSourceConfigConstants.STREAM_INITIAL_POSITION, InitialPosition.TRIM_HORIZON);
            // The 4.3.0 enumerator hands shards only to readers already registered when it lists
            // them, which they are not at its first listing: the rest wait for the next one (10 s
            // by default).
            sourceConfig.set(KinesisStreamsSourceConfigConstants.SHARD_DISCOVERY_INTERVAL_MILLIS, 1000L);
            KinesisStreamsSource<String> source = KinesisStreamsSource.<String>builder()
                    .setStreamArn(in.arn())
                    .setSourceConfig(sourceConfig)
                    .setDeserializationSchema(new SimpleStringSchema())
                    .build();
            // The 4.3.0 source does not declare its output type: given here.
            return env.fromSource(source, WatermarkStrategy.noWatermarks(), "ripstream input", Types.STRING);
        });
    }

    static Properties legacyConsumerProps(RipstreamServer server) {
        Properties props = new Properties();
        props.putAll(awsSettings(server));
        props.setProperty(ConsumerConfigConstants.STREAM_INITIAL_POSITION, "TRIM_HORIZON");
        return props;
    }

    /** The legacy FlinkKinesisConsumer (SourceFunction), polling GetRecords with the SDK v1. */
    @Test
    void flinkKinesisConsumerPolling() throws Exception {
        pipeline((env, in) -> {
            Properties props = legacyConsumerProps(in.server());
            props.setProperty(ConsumerConfigConstants.SHARD_GETRECORDS_INTERVAL_MILLIS, "200");
            return env.addSource(new FlinkKinesisConsumer<>(in.name(), new SimpleStringSchema(), props), "ripstream input");
        });
    }

    /**
     * The legacy FlinkKinesisConsumer with enhanced fan-out: RegisterStreamConsumer, then
     * SubscribeToShard over HTTP/2 (prior knowledge, as the endpoint is cleartext) with the SDK v2.
     */
    @Test
    void flinkKinesisConsumerEnhancedFanOut() throws Exception {
        pipeline((env, in) -> {
            Properties props = legacyConsumerProps(in.server());
            props.setProperty(ConsumerConfigConstants.RECORD_PUBLISHER_TYPE, "EFO");
            props.setProperty(ConsumerConfigConstants.EFO_CONSUMER_NAME, "flink-efo");
            return env.addSource(new FlinkKinesisConsumer<>(in.name(), new SimpleStringSchema(), props), "ripstream input");
        });
    }

    /** Builds the job's source for the test's input stream. */
    interface SourceFactory {
        DataStream<String> create(StreamExecutionEnvironment env, Input in) throws Exception;
    }

    /**
     * Puts RECORDS records into a new two-shard stream, runs source → uppercase → KinesisStreamsSink
     * into another until the SDK reads every record back from it, then cancels the job.
     */
    static void pipeline(SourceFactory sourceFactory) throws Exception {
        try (RipstreamServer server = RipstreamServer.start(); KinesisClient k = sdk(server)) {
            String input = createStream(k, "flink-in", 2);
            String output = createStream(k, "flink-out", 2);
            String inputArn = k.describeStreamSummary(r -> r.streamName(input)).streamDescriptionSummary().streamARN();

            Set<String> expected = new TreeSet<>();
            List<PutRecordsRequestEntry> batch = new ArrayList<>();
            for (int i = 0; i < RECORDS; i++) {
                String value = "record-" + i;
                expected.add(value.toUpperCase(Locale.ROOT));
                batch.add(PutRecordsRequestEntry.builder().partitionKey("key-" + i)
                        .data(SdkBytes.fromString(value, StandardCharsets.UTF_8)).build());
            }
            PutRecordsResponse put = k.putRecords(r -> r.streamName(input).records(batch));
            assertEquals(0, put.failedRecordCount(), () -> put.toString());

            Properties sinkProps = new Properties();
            sinkProps.putAll(awsSettings(server));
            KinesisStreamsSink<String> sink = KinesisStreamsSink.<String>builder()
                    .setKinesisClientProperties(sinkProps)
                    .setStreamName(output)
                    .setSerializationSchema(new SimpleStringSchema())
                    .setPartitionKeyGenerator(value -> value)
                    .setFailOnError(true)
                    // Flush within half a second rather than the default five.
                    .setMaxTimeInBufferMS(500)
                    .build();

            StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
            env.setParallelism(2);
            sourceFactory.create(env, new Input(server, input, inputArn))
                    .map(new Upper())
                    .sinkTo(sink);
            // The sources are unbounded: run until the output holds every record, then cancel.
            JobClient job = env.executeAsync("ripstream uppercase");
            List<String> got;
            JobStatus before;
            try {
                got = readAll(k, output, RECORDS, Instant.now().plus(Duration.ofSeconds(180)));
            } finally {
                before = job.getJobStatus().get(30, TimeUnit.SECONDS);
                if (!before.isGloballyTerminalState()) {
                    job.cancel().get(60, TimeUnit.SECONDS);
                }
                // Cancelling is acknowledged before the tasks stop: the server stays up until they
                // have, so the readers' last polls do not meet a closed port.
                awaitTerminal(job, Instant.now().plus(Duration.ofSeconds(60)));
            }
            String status = "job " + before + " before cancelling; server log tail: " + tail(server.logText());
            assertEquals(JobStatus.RUNNING, before, status);
            assertEquals(expected, new TreeSet<>(got), status);
            // The sink without checkpoints is at-least-once; a failed attempt retried could repeat a
            // record, which would show here as more records than were put.
            assertEquals(RECORDS, got.size(), status);
        }
    }

    static void awaitTerminal(JobClient job, Instant deadline) throws Exception {
        while (!job.getJobStatus().get(30, TimeUnit.SECONDS).isGloballyTerminalState()) {
            if (Instant.now().isAfter(deadline)) {
                throw new AssertionError("the job did not stop within 60 s of its cancellation");
            }
            TimeUnit.MILLISECONDS.sleep(100);
        }
    }

    static String tail(String log) {
        return log.length() <= 4000 ? log : log.substring(log.length() - 4000);
    }
}
