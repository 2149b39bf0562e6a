package dev.ripstream.compat;

import java.net.URI;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.core.client.config.ClientOverrideConfiguration;
import software.amazon.awssdk.core.interceptor.Context;
import software.amazon.awssdk.core.interceptor.ExecutionAttributes;
import software.amazon.awssdk.core.interceptor.ExecutionInterceptor;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.SdkHttpConfigurationOption;
import software.amazon.awssdk.http.apache5.Apache5HttpClient;
import software.amazon.awssdk.http.async.SdkAsyncHttpClient;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.http.ProtocolNegotiation;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.utils.AttributeMap;

/** SDK clients pointed at a test server; TLS servers' self-signed certificates are trusted. */
public final class Clients {
    public static final StaticCredentialsProvider CREDS =
            StaticCredentialsProvider.create(AwsBasicCredentials.create("AKIDJAVACOMPAT", "secret"));

    private Clients() {}

    /** Remembers the Content-Type of every request, to check which protocol the SDK spoke. */
    public static final class ContentTypes implements ExecutionInterceptor {
        public final List<String> seen = new CopyOnWriteArrayList<>();

        @Override
        public void beforeTransmission(Context.BeforeTransmission context, ExecutionAttributes attrs) {
            context.httpRequest().firstMatchingHeader("Content-Type").ifPresent(seen::add);
        }
    }

    /** Counts failed calls by service, operation and error code: what a client library hit. */
    public static final class Failures implements ExecutionInterceptor {
        public final java.util.Map<String, java.util.concurrent.atomic.AtomicInteger> counts =
                new java.util.concurrent.ConcurrentHashMap<>();

        @Override
        public void onExecutionFailure(Context.FailedExecution context, ExecutionAttributes attrs) {
            String code = context.exception() instanceof software.amazon.awssdk.awscore.exception.AwsServiceException e
                    ? e.awsErrorDetails().errorCode() + " " + e.awsErrorDetails().errorMessage()
                    : context.exception().getClass().getSimpleName() + " " + context.exception().getMessage();
            String key = attrs.getAttribute(software.amazon.awssdk.core.interceptor.SdkExecutionAttribute.SERVICE_NAME)
                    + "." + attrs.getAttribute(software.amazon.awssdk.core.interceptor.SdkExecutionAttribute.OPERATION_NAME)
                    + ": " + code;
            counts.computeIfAbsent(key, k -> new java.util.concurrent.atomic.AtomicInteger()).incrementAndGet();
        }

        @Override
        public String toString() {
            return counts.toString();
        }
    }

    private static AttributeMap trust(URI url) {
        AttributeMap.Builder b = AttributeMap.builder();
        if ("https".equals(url.getScheme())) {
            // The test's own self-signed certificate.
            b.put(SdkHttpConfigurationOption.TRUST_ALL_CERTIFICATES, Boolean.TRUE);
        }
        return b.build();
    }

    public static KinesisClient kinesis(RipstreamServer server, ExecutionInterceptor... interceptors) {
        return KinesisClient.builder()
                .endpointOverride(server.url)
                .region(Region.US_EAST_1)
                .credentialsProvider(CREDS)
                .httpClient(Apache5HttpClient.builder().buildWithDefaults(trust(server.url)))
                .overrideConfiguration(ClientOverrideConfiguration.builder()
                        .executionInterceptors(List.of(interceptors))
                        .apiCallTimeout(Duration.ofSeconds(30))
                        .build())
                .build();
    }

    /** HTTP/2 with the Netty client, as the KCL builds it (ALPN over TLS, prior knowledge in cleartext). */
    public static SdkAsyncHttpClient netty(URI url) {
        NettyNioAsyncHttpClient.Builder b = NettyNioAsyncHttpClient.builder()
                .protocol(Protocol.HTTP2)
                .maxConcurrency(Integer.MAX_VALUE)
                .connectionAcquisitionTimeout(Duration.ofSeconds(30));
        if ("https".equals(url.getScheme())) {
            b.protocolNegotiation(ProtocolNegotiation.ALPN);
        }
        return b.buildWithDefaults(trust(url));
    }

    public static KinesisAsyncClient kinesisAsync(RipstreamServer server, ExecutionInterceptor... interceptors) {
        return KinesisAsyncClient.builder()
                .overrideConfiguration(c -> c.executionInterceptors(List.of(interceptors)))
                .endpointOverride(server.url)
                .region(Region.US_EAST_1)
                .credentialsProvider(CREDS)
                .httpClient(netty(server.url))
                .build();
    }

    public static DynamoDbAsyncClient dynamoAsync(RipstreamServer server, ExecutionInterceptor... interceptors) {
        return DynamoDbAsyncClient.builder()
                .overrideConfiguration(c -> c.executionInterceptors(List.of(interceptors)))
                .endpointOverride(server.url)
                .region(Region.US_EAST_1)
                .credentialsProvider(CREDS)
                .httpClient(NettyNioAsyncHttpClient.builder().buildWithDefaults(trust(server.url)))
                .build();
    }
}
