package compat

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

func TestCreateDescribeDeleteWithWaiters(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)
	name := uniqueName("go-life")
	_, err := c.CreateStream(ctx(t), &kinesis.CreateStreamInput{
		StreamName: aws.String(name), ShardCount: aws.Int32(3),
		Tags: map[string]string{"team": "go"},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitActive(t, c, name)

	desc, err := c.DescribeStream(ctx(t), &kinesis.DescribeStreamInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	d := desc.StreamDescription
	if d.StreamStatus != types.StreamStatusActive || len(d.Shards) != 3 || aws.ToInt32(d.RetentionPeriodHours) != 24 {
		t.Fatalf("unexpected description: status %s, %d shards, retention %d", d.StreamStatus, len(d.Shards), aws.ToInt32(d.RetentionPeriodHours))
	}
	if !strings.HasPrefix(aws.ToString(d.StreamARN), "arn:aws:kinesis:us-east-1:") || d.StreamCreationTimestamp == nil {
		t.Fatalf("ARN %q, creation %v", aws.ToString(d.StreamARN), d.StreamCreationTimestamp)
	}
	if age := time.Since(*d.StreamCreationTimestamp); age < -time.Minute || age > 5*time.Minute {
		t.Fatalf("StreamCreationTimestamp %v is not now", d.StreamCreationTimestamp)
	}

	sum, err := c.DescribeStreamSummary(ctx(t), &kinesis.DescribeStreamSummaryInput{StreamARN: d.StreamARN})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(sum.StreamDescriptionSummary.OpenShardCount) != 3 ||
		sum.StreamDescriptionSummary.StreamModeDetails.StreamMode != types.StreamModeProvisioned {
		t.Fatalf("summary: %+v", sum.StreamDescriptionSummary)
	}

	tags, err := c.ListTagsForStream(ctx(t), &kinesis.ListTagsForStreamInput{StreamName: aws.String(name)})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].Value) != "go" {
		t.Fatalf("tags %+v, %v", tags, err)
	}

	if _, err := c.DeleteStream(ctx(t), &kinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	gone := kinesis.NewStreamNotExistsWaiter(c, func(o *kinesis.StreamNotExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = 500 * time.Millisecond
	})
	if err := gone.Wait(ctx(t), &kinesis.DescribeStreamInput{StreamName: aws.String(name)}, 30*time.Second); err != nil {
		t.Fatalf("StreamNotExists waiter: %v", err)
	}
}

func TestListStreamsPaginator(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)
	want := map[string]bool{}
	for i := 0; i < 3; i++ {
		want[createStream(t, c, 1)] = true
	}
	p := kinesis.NewListStreamsPaginator(c, &kinesis.ListStreamsInput{Limit: aws.Int32(1)})
	pages, found := 0, 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.StreamNames) > 1 || len(page.StreamSummaries) != len(page.StreamNames) {
			t.Fatalf("page of Limit 1 has %d names, %d summaries", len(page.StreamNames), len(page.StreamSummaries))
		}
		for _, n := range page.StreamNames {
			if want[n] {
				found++
			}
		}
		if pages > 1000 {
			t.Fatal("ListStreams paginator does not end")
		}
	}
	if found != 3 || pages < 3 {
		t.Fatalf("found %d of 3 streams in %d pages", found, pages)
	}
}

// The Go SDK generates no ListShards paginator (NextToken excludes
// StreamName, which smithy's paginator trait cannot express), so this is the
// loop its documentation shows; DescribeStream has a handwritten paginator.
func TestListShardsAndDescribeStreamPagination(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)
	name := createStream(t, c, 5)

	var ids []string
	in := &kinesis.ListShardsInput{StreamName: aws.String(name), MaxResults: aws.Int32(2)}
	for pages := 0; ; pages++ {
		out, err := c.ListShards(ctx(t), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Shards) > 2 {
			t.Fatalf("MaxResults 2 gave %d shards", len(out.Shards))
		}
		for _, s := range out.Shards {
			ids = append(ids, aws.ToString(s.ShardId))
		}
		if out.NextToken == nil {
			break
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken, MaxResults: aws.Int32(2)}
		if pages > 10 {
			t.Fatal("ListShards pagination does not end")
		}
	}
	if len(ids) != 5 || !sort.StringsAreSorted(ids) || ids[0] != "shardId-000000000000" {
		t.Fatalf("ListShards pages gave %v", ids)
	}

	dp := kinesis.NewDescribeStreamPaginator(c, &kinesis.DescribeStreamInput{StreamName: aws.String(name), Limit: aws.Int32(2)})
	var described []string
	for dp.HasMorePages() {
		page, err := dp.NextPage(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.StreamDescription.Shards {
			described = append(described, aws.ToString(s.ShardId))
		}
	}
	if strings.Join(described, ",") != strings.Join(ids, ",") {
		t.Fatalf("DescribeStream paginator %v, ListShards %v", described, ids)
	}
}

func TestPutAndGetRecords(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)
	name := createStream(t, c, 2)

	one, err := c.PutRecord(ctx(t), &kinesis.PutRecordInput{
		StreamName: aws.String(name), PartitionKey: aws.String("user-1"), Data: []byte(`{"clicked": true}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(aws.ToString(one.SequenceNumber)) != 56 || !strings.HasPrefix(aws.ToString(one.ShardId), "shardId-") {
		t.Fatalf("PutRecord output %+v", one)
	}

	var entries []types.PutRecordsRequestEntry
	sent := map[string][]byte{}
	for i := 0; i < 50; i++ {
		data := bytes.Repeat([]byte{byte(i)}, i+1) // binary, not text
		key := fmt.Sprintf("key-%d", i)
		sent[key] = data
		entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: data})
	}
	batch, err := c.PutRecords(ctx(t), &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(batch.FailedRecordCount) != 0 || len(batch.Records) != 50 {
		t.Fatalf("PutRecords: %d failed, %d results", aws.ToInt32(batch.FailedRecordCount), len(batch.Records))
	}

	got := map[string][]byte{}
	for _, shard := range shardIDs(t, c, name) {
		var last string
		for _, r := range readShard(t, c, name, shard) {
			seq := aws.ToString(r.SequenceNumber)
			if last != "" && cmpSeq(seq, last) <= 0 {
				t.Fatalf("sequence numbers not increasing in %s: %s after %s", shard, seq, last)
			}
			last = seq
			if r.ApproximateArrivalTimestamp == nil || time.Since(*r.ApproximateArrivalTimestamp) > 5*time.Minute {
				t.Fatalf("ApproximateArrivalTimestamp %v", r.ApproximateArrivalTimestamp)
			}
			got[aws.ToString(r.PartitionKey)] = r.Data
		}
	}
	if string(got["user-1"]) != `{"clicked": true}` {
		t.Fatalf("PutRecord's record read back as %q", got["user-1"])
	}
	for k, v := range sent {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("record %s read back as %v, sent %v", k, got[k], v)
		}
	}

	// AT_SEQUENCE_NUMBER / AFTER_SEQUENCE_NUMBER around PutRecord's record.
	at, err := c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: one.ShardId,
		ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: one.SequenceNumber,
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: at.ShardIterator, Limit: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Records) != 1 || aws.ToString(recs.Records[0].SequenceNumber) != aws.ToString(one.SequenceNumber) {
		t.Fatalf("AT_SEQUENCE_NUMBER read %+v", recs.Records)
	}
	after, err := c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: one.ShardId,
		ShardIteratorType: types.ShardIteratorTypeAfterSequenceNumber, StartingSequenceNumber: one.SequenceNumber,
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err = c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: after.ShardIterator, Limit: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Records) == 1 && aws.ToString(recs.Records[0].SequenceNumber) == aws.ToString(one.SequenceNumber) {
		t.Fatal("AFTER_SEQUENCE_NUMBER returned the record itself")
	}

	// AT_TIMESTAMP (a timestamp member in a request) from before the writes.
	ts, err := c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: one.ShardId,
		ShardIteratorType: types.ShardIteratorTypeAtTimestamp, Timestamp: aws.Time(time.Now().Add(-time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, err = c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: ts.ShardIterator})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Records) == 0 {
		t.Fatal("AT_TIMESTAMP an hour ago read nothing")
	}

	// An explicit hash key picks the shard holding it.
	high, err := c.PutRecord(ctx(t), &kinesis.PutRecordInput{
		StreamName: aws.String(name), PartitionKey: aws.String("x"), Data: []byte("hi"),
		ExplicitHashKey: aws.String("340282366920938463463374607431768211455"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(high.ShardId) != "shardId-000000000001" {
		t.Fatalf("the top hash key went to %s", aws.ToString(high.ShardId))
	}
}

func cmpSeq(a, b string) int {
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	return x.Cmp(y)
}

func TestTypedErrors(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)

	_, err := c.DescribeStream(ctx(t), &kinesis.DescribeStreamInput{StreamName: aws.String(uniqueName("missing"))})
	var notFound *types.ResourceNotFoundException
	if !errors.As(err, &notFound) {
		t.Fatalf("DescribeStream of a missing stream: %T %v", err, err)
	}
	if !strings.Contains(notFound.ErrorMessage(), "not found") {
		t.Fatalf("ResourceNotFoundException message %q", notFound.ErrorMessage())
	}

	name := createStream(t, c, 1)
	_, err = c.CreateStream(ctx(t), &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(1)})
	var inUse *types.ResourceInUseException
	if !errors.As(err, &inUse) {
		t.Fatalf("CreateStream of an existing stream: %T %v", err, err)
	}

	_, err = c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: aws.String("shardId-000000000000"),
		ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: aws.String("12345"),
	})
	var invalid *types.InvalidArgumentException
	if !errors.As(err, &invalid) {
		t.Fatalf("GetShardIterator with a bad sequence number: %T %v", err, err)
	}

	_, err = c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: aws.String("AAAAAAAAAAAAAAAAnot-a-real-iterator")})
	if !errors.As(err, &invalid) {
		t.Fatalf("GetRecords with a forged iterator: %T %v", err, err)
	}

	_, err = c.SplitShard(ctx(t), &kinesis.SplitShardInput{
		StreamName: aws.String(name), ShardToSplit: aws.String("shardId-000000000000"), NewStartingHashKey: aws.String("0"),
	})
	if !errors.As(err, &invalid) {
		t.Fatalf("SplitShard at the range's start: %T %v", err, err)
	}

	// A value the model's constraints refuse: the server answers
	// ValidationException (the SDK validates only required members).
	_, err = c.CreateStream(ctx(t), &kinesis.CreateStreamInput{StreamName: aws.String("bad name!"), ShardCount: aws.Int32(1)})
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != "ValidationException" || api.ErrorFault() != smithy.FaultClient {
		t.Fatalf("CreateStream with an invalid name: %T %v", err, err)
	}

	_, err = c.PutRecord(ctx(t), &kinesis.PutRecordInput{
		StreamName: aws.String(name), PartitionKey: aws.String("k"), Data: []byte("x"), DryRun: aws.Bool(true),
	})
	var dry *types.DryRunOperationException
	if !errors.As(err, &dry) {
		t.Fatalf("PutRecord DryRun: %T %v", err, err)
	}
}

func TestSplitShardLineage(t *testing.T) {
	t.Parallel()
	c := kinesisClient(t, shared)
	name := createStream(t, c, 1)
	for i := 0; i < 5; i++ {
		if _, err := c.PutRecord(ctx(t), &kinesis.PutRecordInput{
			StreamName: aws.String(name), PartitionKey: aws.String(fmt.Sprint(i)), Data: []byte("before"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	mid := new(big.Int).Lsh(big.NewInt(1), 127).String()
	if _, err := c.SplitShard(ctx(t), &kinesis.SplitShardInput{
		StreamName: aws.String(name), ShardToSplit: aws.String("shardId-000000000000"), NewStartingHashKey: aws.String(mid),
	}); err != nil {
		t.Fatal(err)
	}
	waitActive(t, c, name)

	out, err := c.ListShards(ctx(t), &kinesis.ListShardsInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Shards) != 3 {
		t.Fatalf("after a split ListShards lists %d shards", len(out.Shards))
	}
	parent := out.Shards[0]
	if aws.ToString(parent.ShardId) != "shardId-000000000000" || parent.SequenceNumberRange.EndingSequenceNumber == nil {
		t.Fatalf("parent %+v is not closed", parent)
	}
	for _, child := range out.Shards[1:] {
		if aws.ToString(child.ParentShardId) != "shardId-000000000000" || child.SequenceNumberRange.EndingSequenceNumber != nil {
			t.Fatalf("child %s: parent %q, ending %v", aws.ToString(child.ShardId), aws.ToString(child.ParentShardId), child.SequenceNumberRange.EndingSequenceNumber)
		}
		if cmpSeq(aws.ToString(child.SequenceNumberRange.StartingSequenceNumber), aws.ToString(parent.SequenceNumberRange.EndingSequenceNumber)) <= 0 {
			t.Fatal("a child's sequence numbers do not follow its parent's")
		}
	}
	if aws.ToString(out.Shards[1].HashKeyRange.EndingHashKey) != new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 127), big.NewInt(1)).String() ||
		aws.ToString(out.Shards[2].HashKeyRange.StartingHashKey) != mid {
		t.Fatalf("children's hash ranges %+v %+v", out.Shards[1].HashKeyRange, out.Shards[2].HashKeyRange)
	}

	latest, err := c.ListShards(ctx(t), &kinesis.ListShardsInput{
		StreamName: aws.String(name), ShardFilter: &types.ShardFilter{Type: types.ShardFilterTypeAtLatest},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(latest.Shards) != 2 {
		t.Fatalf("AT_LATEST lists %d shards", len(latest.Shards))
	}

	// Reading the closed parent to its end: its records, then ChildShards and no iterator.
	it, err := c.GetShardIterator(ctx(t), &kinesis.GetShardIteratorInput{
		StreamName: aws.String(name), ShardId: parent.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	iter := it.ShardIterator
	for i := 0; iter != nil && i < 20; i++ {
		r, err := c.GetRecords(ctx(t), &kinesis.GetRecordsInput{ShardIterator: iter})
		if err != nil {
			t.Fatal(err)
		}
		n += len(r.Records)
		iter = r.NextShardIterator
		if iter == nil {
			if len(r.ChildShards) != 2 || r.ChildShards[0].ParentShards[0] != "shardId-000000000000" {
				t.Fatalf("end of the parent: ChildShards %+v", r.ChildShards)
			}
		}
	}
	if iter != nil || n != 5 {
		t.Fatalf("parent read %d records, iterator at the end %v", n, iter)
	}
}
