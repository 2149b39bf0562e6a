package compat

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

func registerConsumer(t *testing.T, c *kinesis.Client, stream string) (streamARN, consumerARN string) {
	t.Helper()
	sum, err := c.DescribeStreamSummary(ctx(t), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	streamARN = aws.ToString(sum.StreamDescriptionSummary.StreamARN)
	reg, err := c.RegisterStreamConsumer(ctx(t), &kinesis.RegisterStreamConsumerInput{
		StreamARN: aws.String(streamARN), ConsumerName: aws.String("go-efo"),
	})
	if err != nil {
		t.Fatal(err)
	}
	consumerARN = aws.ToString(reg.Consumer.ConsumerARN)
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := c.DescribeStreamConsumer(ctx(t), &kinesis.DescribeStreamConsumerInput{ConsumerARN: aws.String(consumerARN)})
		if err != nil {
			t.Fatal(err)
		}
		if d.ConsumerDescription.ConsumerStatus == types.ConsumerStatusActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer still %s", d.ConsumerDescription.ConsumerStatus)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p := kinesis.NewListStreamConsumersPaginator(c, &kinesis.ListStreamConsumersInput{StreamARN: aws.String(streamARN)})
	var names []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, cons := range page.Consumers {
			names = append(names, aws.ToString(cons.ConsumerName))
		}
	}
	if strings.Join(names, ",") != "go-efo" {
		t.Fatalf("ListStreamConsumers paginator: %v", names)
	}
	return streamARN, consumerARN
}

// subscribeAndReceive checks both halves of enhanced fan-out: records written
// before the subscription are delivered from TRIM_HORIZON, and records written
// while it is open are pushed without another request.
func subscribeAndReceive(t *testing.T, c *kinesis.Client) {
	name := createStream(t, c, 1)
	_, consumerARN := registerConsumer(t, c, name)
	put := func(data string) {
		if _, err := c.PutRecord(ctx(t), &kinesis.PutRecordInput{
			StreamName: aws.String(name), PartitionKey: aws.String(data), Data: []byte(data),
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		put(fmt.Sprintf("before-%d", i))
	}

	out, err := c.SubscribeToShard(ctx(t), &kinesis.SubscribeToShardInput{
		ConsumerARN: aws.String(consumerARN), ShardId: aws.String("shardId-000000000000"),
		StartingPosition: &types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon},
	})
	if err != nil {
		t.Fatalf("SubscribeToShard: %v", err)
	}
	stream := out.GetStream()
	defer stream.Close()

	var got []string
	var continuation string
	pushed := false
	timeout := time.After(30 * time.Second)
	for len(got) < 5 {
		select {
		case ev, ok := <-stream.Events():
			if !ok {
				t.Fatalf("event stream ended after %v: %v", got, stream.Err())
			}
			e, isEvent := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent)
			if !isEvent {
				t.Fatalf("unexpected event %T", ev)
			}
			continuation = aws.ToString(e.Value.ContinuationSequenceNumber)
			if e.Value.MillisBehindLatest == nil {
				t.Fatal("event without MillisBehindLatest")
			}
			for _, r := range e.Value.Records {
				got = append(got, string(r.Data))
			}
			if len(got) >= 3 && !pushed {
				pushed = true
				put("during-0")
				put("during-1")
			}
		case <-timeout:
			t.Fatalf("received only %v in 30 s (stream error %v)", got, stream.Err())
		}
	}
	if strings.Join(got, ",") != "before-0,before-1,before-2,during-0,during-1" {
		t.Fatalf("received %v", got)
	}
	if len(continuation) != 56 {
		t.Fatalf("ContinuationSequenceNumber %q", continuation)
	}
	if err := stream.Close(); err != nil {
		t.Fatalf("closing the event stream: %v", err)
	}
}

// Against an http:// endpoint the Go SDK sends SubscribeToShard over
// HTTP/1.1 (net/http speaks HTTP/2 only over TLS), which the server serves.
func TestSubscribeToShardCleartext(t *testing.T) {
	// Not parallel: once in about fifteen fully parallel runs on a loaded
	// 2-core machine the Go client reported its own subscription connection
	// closed ("use of closed network connection") right after a concurrent
	// PutRecord; alone it never failed in 30 runs. Under investigation.
	rec := &protoRecorder{inner: nil, protos: map[string]bool{}}
	cfg := awsConfig(t, "AKIDCOMPATGO", "secret")
	rec.inner = cfg.HTTPClient
	if rec.inner == nil {
		t.Fatal("no default HTTP client")
	}
	c := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(shared.URL)
		o.HTTPClient = rec
	})
	subscribeAndReceive(t, c)
	if seen := rec.seen(); strings.Join(seen, ",") != "HTTP/1.1" {
		t.Fatalf("protocols used: %v", seen)
	}
}

// Over https:// the SDK's transport negotiates HTTP/2 by ALPN, as it does
// with AWS; the certificate is made here and trusted only by this client.
func TestSubscribeToShardTLSHTTP2(t *testing.T) {
	t.Parallel()
	certPath, keyPath, pool := selfSignedCert(t)
	s := startTestServer(t, "--tls-cert", certPath, "--tls-key", keyPath)
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("TLS server printed %q", s.URL)
	}
	rec := tlsHTTPClient(pool)
	cfg := awsConfig(t, "AKIDCOMPATGO", "secret")
	c := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(s.URL)
		o.HTTPClient = rec
	})
	subscribeAndReceive(t, c)
	seen := rec.seen()
	sort.Strings(seen)
	if strings.Join(seen, ",") != "HTTP/2.0" {
		t.Fatalf("protocols used: %v", seen)
	}
}
