//! Stream lifecycle, description, listing, settings and tags.

use std::time::Duration;

use aws_sdk_kinesis::types::{
    MetricsName, ShardFilter, ShardFilterType, StreamMode, StreamModeDetails, StreamStatus,
};

use crate::support::*;

#[tokio::test]
async fn create_describe_list_and_delete() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "orders", 3).await;
    let d = c
        .describe_stream()
        .stream_name("orders")
        .send()
        .await
        .unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.stream_name(), "orders");
    assert_eq!(
        d.stream_arn(),
        "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
    );
    assert_eq!(d.stream_status(), &StreamStatus::Active);
    assert_eq!(d.retention_period_hours(), 24);
    assert!(!d.has_more_shards());
    assert_eq!(
        d.stream_mode_details().unwrap().stream_mode(),
        &StreamMode::Provisioned
    );
    assert_eq!(d.encryption_type().unwrap().as_str(), "NONE");
    let shards = d.shards();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[0].shard_id(), "shardId-000000000000");
    assert_eq!(shards[2].shard_id(), "shardId-000000000002");
    // AWS's split of the key space into three.
    let r0 = shards[0].hash_key_range().unwrap();
    assert_eq!(r0.starting_hash_key(), "0");
    assert_eq!(
        r0.ending_hash_key(),
        "113427455640312821154458202477256070484"
    );
    assert_eq!(
        shards[2].hash_key_range().unwrap().ending_hash_key(),
        "340282366920938463463374607431768211455"
    );
    let seq = shards[0].sequence_number_range().unwrap();
    assert!(seq.ending_sequence_number().is_none());
    assert_eq!(seq.starting_sequence_number().len(), 56);

    let s = c
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await
        .unwrap();
    let s = s.stream_description_summary().unwrap();
    assert_eq!(s.open_shard_count(), 3);
    assert_eq!(s.consumer_count(), Some(0));
    assert_eq!(s.max_record_size_in_kib(), Some(1024));
    assert!(s.stream_creation_timestamp().secs() > 1_700_000_000);
    assert_eq!(s.enhanced_monitoring().len(), 1);

    let l = c.list_streams().send().await.unwrap();
    assert_eq!(l.stream_names(), ["orders"]);
    assert!(!l.has_more_streams());
    assert_eq!(l.stream_summaries()[0].stream_arn(), d.stream_arn());

    c.delete_stream()
        .stream_name("orders")
        .send()
        .await
        .unwrap();
    let e = c
        .describe_stream()
        .stream_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    assert_eq!(
        message(&e),
        "Stream orders under account 000000000000 not found."
    );
    let e = c
        .delete_stream()
        .stream_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test]
async fn create_errors_and_modes() {
    let srv = TestServer::start_with(&["--shard-limit", "10"]);
    let c = srv.client();
    create_stream(&c, "a", 2).await;
    let e = c
        .create_stream()
        .stream_name("a")
        .shard_count(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    assert_eq!(
        message(&e),
        "Stream a under account 000000000000 already exists."
    );
    let e = c
        .create_stream()
        .stream_name("big")
        .shard_count(9)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    assert!(
        message(&e).contains("Current shard count for the account: 2. Limit: 10."),
        "{}",
        message(&e)
    );
    let e = c
        .create_stream()
        .stream_name("zero")
        .shard_count(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = c
        .create_stream()
        .stream_name("bad/name")
        .shard_count(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    let on_demand = StreamModeDetails::builder()
        .stream_mode(StreamMode::OnDemand)
        .build()
        .unwrap();
    c.create_stream()
        .stream_name("od")
        .stream_mode_details(on_demand.clone())
        .send()
        .await
        .unwrap();
    let s = c
        .describe_stream_summary()
        .stream_name("od")
        .send()
        .await
        .unwrap();
    let s = s.stream_description_summary().unwrap();
    assert_eq!(s.open_shard_count(), 4);
    assert_eq!(
        s.stream_mode_details().unwrap().stream_mode(),
        &StreamMode::OnDemand
    );
    let e = c
        .create_stream()
        .stream_name("od2")
        .shard_count(2)
        .stream_mode_details(on_demand)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");

    let limits = c.describe_limits().send().await.unwrap();
    assert_eq!(limits.shard_limit(), 10);
    assert_eq!(limits.open_shard_count(), 6);
    assert_eq!(limits.on_demand_stream_count(), 1);
    assert_eq!(limits.on_demand_stream_count_limit(), 50);
}

#[tokio::test]
async fn stream_arn_addresses_streams() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "arnie", 1).await;
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/arnie";
    let s = c
        .describe_stream_summary()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary().unwrap().stream_name(),
        "arnie"
    );
    c.describe_stream()
        .stream_arn(arn)
        .stream_name("arnie")
        .send()
        .await
        .unwrap();
    let e = c
        .describe_stream()
        .stream_arn(arn)
        .stream_name("other")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .describe_stream()
        .stream_arn("arn:aws:kinesis:us-east-1:111111111111:stream/arnie")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = c.describe_stream().send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
}

#[tokio::test]
async fn list_and_describe_paginate() {
    let srv = TestServer::start();
    let c = srv.client();
    for name in ["s1", "s2", "s3", "s4", "s5"] {
        create_stream(&c, name, 1).await;
    }
    let p1 = c.list_streams().limit(2).send().await.unwrap();
    assert_eq!(p1.stream_names(), ["s1", "s2"]);
    assert!(p1.has_more_streams());
    let p2 = c
        .list_streams()
        .next_token(p1.next_token().unwrap())
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(p2.stream_names(), ["s3", "s4"]);
    let p3 = c
        .list_streams()
        .exclusive_start_stream_name("s4")
        .send()
        .await
        .unwrap();
    assert_eq!(p3.stream_names(), ["s5"]);
    assert!(!p3.has_more_streams());
    let mut all = Vec::new();
    let mut pages = c.list_streams().limit(2).into_paginator().send();
    while let Some(p) = pages.next().await {
        all.extend(p.unwrap().stream_names().to_vec());
    }
    assert_eq!(all.len(), 5);

    create_stream(&c, "wide", 5).await;
    let d = c
        .describe_stream()
        .stream_name("wide")
        .limit(2)
        .send()
        .await
        .unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.shards().len(), 2);
    assert!(d.has_more_shards());
    let d = c
        .describe_stream()
        .stream_name("wide")
        .exclusive_start_shard_id("shardId-000000000001")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = d
        .stream_description()
        .unwrap()
        .shards()
        .iter()
        .map(|s| s.shard_id())
        .collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000002",
            "shardId-000000000003",
            "shardId-000000000004"
        ]
    );
}

#[tokio::test]
async fn list_shards_pages_and_filters() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "ls", 5).await;
    let all = c.list_shards().stream_name("ls").send().await.unwrap();
    assert_eq!(all.shards().len(), 5);
    assert!(all.next_token().is_none());
    let p1 = c
        .list_shards()
        .stream_name("ls")
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(p1.shards().len(), 2);
    let token = p1.next_token().unwrap().to_string();
    let p2 = c
        .list_shards()
        .next_token(&token)
        .max_results(10)
        .send()
        .await
        .unwrap();
    assert_eq!(p2.shards()[0].shard_id(), "shardId-000000000002");
    assert_eq!(p2.shards().len(), 3);
    let e = c
        .list_shards()
        .next_token(&token)
        .stream_name("ls")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(
        message(&e),
        "NextToken and StreamName cannot be provided together."
    );
    let e = c.list_shards().send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let after = c
        .list_shards()
        .stream_name("ls")
        .exclusive_start_shard_id("shardId-000000000003")
        .send()
        .await
        .unwrap();
    assert_eq!(after.shards().len(), 1);

    let filter = |t: ShardFilterType| ShardFilter::builder().r#type(t);
    for t in [
        ShardFilterType::AtLatest,
        ShardFilterType::AtTrimHorizon,
        ShardFilterType::FromTrimHorizon,
    ] {
        let r = c
            .list_shards()
            .stream_name("ls")
            .shard_filter(filter(t.clone()).build().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.shards().len(), 5, "{t:?}");
    }
    let r = c
        .list_shards()
        .stream_name("ls")
        .shard_filter(
            filter(ShardFilterType::AfterShardId)
                .shard_id("shardId-000000000001")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.shards().len(), 3);
    let now = aws_sdk_kinesis::primitives::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    for t in [ShardFilterType::AtTimestamp, ShardFilterType::FromTimestamp] {
        let r = c
            .list_shards()
            .stream_name("ls")
            .shard_filter(filter(t.clone()).timestamp(now).build().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.shards().len(), 5, "{t:?}");
        let e = c
            .list_shards()
            .stream_name("ls")
            .shard_filter(filter(t).build().unwrap())
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException");
    }
}

#[tokio::test]
async fn status_delays_show_creating_and_deleting() {
    let srv = TestServer::start_with(&[
        "--create-stream-delay-ms",
        "600",
        "--delete-stream-delay-ms",
        "600",
    ]);
    let c = srv.client();
    create_stream(&c, "slow", 1).await;
    let d = c
        .describe_stream()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description().unwrap().stream_status(),
        &StreamStatus::Creating
    );
    assert!(d.stream_description().unwrap().shards().is_empty());
    let e = c
        .put_record()
        .stream_name("slow")
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = c
        .increase_stream_retention_period()
        .stream_name("slow")
        .retention_period_hours(48)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    assert_eq!(
        message(&e),
        "Stream slow under account 000000000000 not ACTIVE, instead in state CREATING"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let d = c
        .describe_stream()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description().unwrap().stream_status(),
        &StreamStatus::Active
    );
    c.delete_stream().stream_name("slow").send().await.unwrap();
    let d = c
        .describe_stream()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description().unwrap().stream_status(),
        &StreamStatus::Deleting
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let e = c
        .describe_stream()
        .stream_name("slow")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    // The name is free again, with a fresh stream.
    create_stream(&c, "slow", 2).await;
}

#[tokio::test]
async fn retention_period_rules() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "r", 1).await;
    c.increase_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(48)
        .send()
        .await
        .unwrap();
    let hours = |c: aws_sdk_kinesis::Client| async move {
        c.describe_stream_summary()
            .stream_name("r")
            .send()
            .await
            .unwrap()
            .stream_description_summary()
            .unwrap()
            .retention_period_hours()
    };
    assert_eq!(hours(c.clone()).await, 48);
    let cases = [
        (
            true,
            23,
            "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short.",
        ),
        (
            true,
            8761,
            "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long.",
        ),
        (
            true,
            30,
            "Requested retention period (30 hours) for stream r can not be shorter than existing retention period (48 hours). Use DecreaseRetentionPeriod API.",
        ),
        (
            false,
            72,
            "Requested retention period (72 hours) for stream r can not be longer than existing retention period (48 hours). Use IncreaseRetentionPeriod API.",
        ),
    ];
    for (increase, h, msg) in cases {
        let e = if increase {
            c.increase_stream_retention_period()
                .stream_name("r")
                .retention_period_hours(h)
                .send()
                .await
                .unwrap_err()
                .into_service_error()
                .meta()
                .clone()
        } else {
            c.decrease_stream_retention_period()
                .stream_name("r")
                .retention_period_hours(h)
                .send()
                .await
                .unwrap_err()
                .into_service_error()
                .meta()
                .clone()
        };
        assert_eq!(e.code(), Some("InvalidArgumentException"));
        assert_eq!(e.message(), Some(msg));
    }
    c.decrease_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(24)
        .send()
        .await
        .unwrap();
    assert_eq!(hours(c.clone()).await, 24);
    c.increase_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(8760)
        .send()
        .await
        .unwrap();
    assert_eq!(hours(c.clone()).await, 8760);
}

#[tokio::test]
async fn mode_record_size_and_monitoring() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "m", 2).await;
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/m";
    c.update_stream_mode()
        .stream_arn(arn)
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let s = c
        .describe_stream_summary()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary()
            .unwrap()
            .stream_mode_details()
            .unwrap()
            .stream_mode(),
        &StreamMode::OnDemand
    );
    assert_eq!(
        c.describe_limits()
            .send()
            .await
            .unwrap()
            .on_demand_stream_count(),
        1
    );

    c.update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(2048)
        .send()
        .await
        .unwrap();
    let s = c
        .describe_stream_summary()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary()
            .unwrap()
            .max_record_size_in_kib(),
        Some(2048)
    );
    let e = c
        .update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(100)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    let en = c
        .enable_enhanced_monitoring()
        .stream_name("m")
        .shard_level_metrics(MetricsName::IncomingBytes)
        .send()
        .await
        .unwrap();
    assert!(en.current_shard_level_metrics().is_empty());
    assert_eq!(
        en.desired_shard_level_metrics(),
        [MetricsName::IncomingBytes]
    );
    let en = c
        .enable_enhanced_monitoring()
        .stream_name("m")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await
        .unwrap();
    assert_eq!(en.desired_shard_level_metrics().len(), 7);
    let d = c.describe_stream().stream_name("m").send().await.unwrap();
    assert_eq!(
        d.stream_description().unwrap().enhanced_monitoring()[0]
            .shard_level_metrics()
            .len(),
        7
    );
    let dis = c
        .disable_enhanced_monitoring()
        .stream_name("m")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await
        .unwrap();
    assert_eq!(dis.current_shard_level_metrics().len(), 7);
    assert!(dis.desired_shard_level_metrics().is_empty());
}

#[tokio::test]
async fn tags_on_streams_and_resources() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "t", 1).await;
    c.add_tags_to_stream()
        .stream_name("t")
        .tags("b", "2")
        .tags("a", "1")
        .tags("c", "3")
        .send()
        .await
        .unwrap();
    let l = c
        .list_tags_for_stream()
        .stream_name("t")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = l.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert!(!l.has_more_tags());
    let l = c
        .list_tags_for_stream()
        .stream_name("t")
        .limit(1)
        .exclusive_start_tag_key("a")
        .send()
        .await
        .unwrap();
    assert_eq!(l.tags()[0].key(), "b");
    assert_eq!(l.tags()[0].value(), Some("2"));
    assert!(l.has_more_tags());
    c.remove_tags_from_stream()
        .stream_name("t")
        .tag_keys("b")
        .tag_keys("zz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.list_tags_for_stream()
            .stream_name("t")
            .send()
            .await
            .unwrap()
            .tags()
            .len(),
        2
    );

    let e = c
        .add_tags_to_stream()
        .stream_name("t")
        .tags("bad;key", "v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let mut req = c.add_tags_to_stream().stream_name("t");
    for i in 0..49 {
        req = req.tags(format!("k{i}"), "v");
    }
    let e = req.send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(
        message(&e).contains("cannot have more than 50 tags"),
        "{}",
        message(&e)
    );

    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/t";
    c.tag_resource()
        .resource_arn(arn)
        .tags("env", "prod")
        .send()
        .await
        .unwrap();
    let l = c
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert!(
        l.tags()
            .iter()
            .any(|t| t.key() == "env" && t.value() == Some("prod"))
    );
    c.untag_resource()
        .resource_arn(arn)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let l = c
        .list_tags_for_stream()
        .stream_name("t")
        .send()
        .await
        .unwrap();
    assert!(!l.tags().iter().any(|t| t.key() == "env"));
    let e = c
        .list_tags_for_resource()
        .resource_arn("arn:aws:kinesis:us-east-1:000000000000:stream/nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");

    c.create_stream()
        .stream_name("tagged")
        .shard_count(1)
        .tags("team", "data")
        .send()
        .await
        .unwrap();
    let l = c
        .list_tags_for_stream()
        .stream_name("tagged")
        .send()
        .await
        .unwrap();
    assert_eq!(l.tags()[0].key(), "team");
}

/// AWS accepts DeleteStream on a stream still CREATING: it goes to DELETING
/// and then away, never ACTIVE.
#[tokio::test]
async fn a_stream_still_creating_can_be_deleted() {
    let srv = TestServer::start_with(&[
        "--create-stream-delay-ms",
        "8000",
        "--delete-stream-delay-ms",
        "500",
    ]);
    let c = srv.client();
    let started = std::time::Instant::now();
    create_stream(&c, "early", 1).await;
    let status = |d: &aws_sdk_kinesis::operation::describe_stream::DescribeStreamOutput| {
        d.stream_description().unwrap().stream_status().clone()
    };
    let d = c
        .describe_stream()
        .stream_name("early")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&d), StreamStatus::Creating);
    c.delete_stream().stream_name("early").send().await.unwrap();
    let d = c
        .describe_stream()
        .stream_name("early")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&d), StreamStatus::Deleting);
    // Its shards never became visible, so none are listed (AWS's recorded answer).
    assert!(d.stream_description().unwrap().shards().is_empty());
    // Gone well before it would have been ACTIVE.
    loop {
        match c.describe_stream().stream_name("early").send().await {
            Ok(d) => assert_eq!(status(&d), StreamStatus::Deleting),
            Err(e) => {
                assert_eq!(code(&e), "ResourceNotFoundException");
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "the deletion never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = c
        .delete_stream()
        .stream_name("early")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

/// A value outside a request enum is refused by the model check before the
/// service sees it, with AWS's message (values listed in the order AWS's
/// Java hash sets give them); the service only ever gets one of the model's
/// values.
#[tokio::test]
async fn enum_values_outside_the_model_get_aws_validation_messages() {
    use aws_sdk_kinesis::types::{
        MinimumThroughputBillingCommitmentInput, MinimumThroughputBillingCommitmentInputStatus,
        RecordDistributionStrategy, ScalingType, ShardIteratorType,
    };
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "en", 1).await;
    let expect = |e: String, m: String, want: &str| {
        assert_eq!(e, "ValidationException", "{m}");
        assert_eq!(m, format!("1 validation error detected: {want}"));
    };
    let e = c
        .create_stream()
        .stream_name("en2")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::from("SOMETIMES"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'SOMETIMES' at 'streamModeDetails.streamMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
    );
    let e = c
        .update_stream_mode()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/en")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::from("SOMETIMES"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'SOMETIMES' at 'streamModeDetails.streamMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
    );
    let e = c
        .list_shards()
        .stream_name("en")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::from("AT_NOON"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'AT_NOON' at 'shardFilter.type' failed to satisfy constraint: Member must satisfy enum value set: [FROM_TIMESTAMP, FROM_TRIM_HORIZON, AT_LATEST, AT_TRIM_HORIZON, AT_TIMESTAMP, AFTER_SHARD_ID]",
    );
    let e = c
        .enable_enhanced_monitoring()
        .stream_name("en")
        .shard_level_metrics(MetricsName::from("Vibes"))
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value '[Vibes]' at 'shardLevelMetrics' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [ALL, WriteProvisionedThroughputExceeded, IteratorAgeMilliseconds, IncomingBytes, OutgoingRecords, ReadProvisionedThroughputExceeded, IncomingRecords, OutgoingBytes]]",
    );
    let e = c
        .get_shard_iterator()
        .stream_name("en")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::from("SOMEWHERE"))
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'SOMEWHERE' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
    );
    let e = c
        .update_stream_record_distribution_strategy()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/en")
        .record_distribution_strategy(RecordDistributionStrategy::from("RANDOM"))
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'RANDOM' at 'recordDistributionStrategy' failed to satisfy constraint: Member must satisfy enum value set: [USER_PARTITION_KEY, AUTO]",
    );
    let e = c
        .update_account_settings()
        .minimum_throughput_billing_commitment(
            MinimumThroughputBillingCommitmentInput::builder()
                .status(MinimumThroughputBillingCommitmentInputStatus::from("MAYBE"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'MAYBE' at 'minimumThroughputBillingCommitment.status' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]",
    );
    let e = c
        .update_shard_count()
        .stream_name("en")
        .target_shard_count(2)
        .scaling_type(ScalingType::from("LOPSIDED"))
        .send()
        .await
        .unwrap_err();
    expect(
        code(&e),
        message(&e),
        "Value 'LOPSIDED' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [UNIFORM_SCALING]",
    );
    // A value of the model's set that the operation does not take is the
    // service's to refuse.
    let e = c
        .start_stream_encryption()
        .stream_name("en")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::None)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(
        message(&e),
        "EncryptionType NONE is not valid to start encryption; use KMS."
    );
}
