//! Dynamic partitioning (ExtendedS3 `DynamicPartitioningConfiguration`):
//! its checks at create and update, and the split of a flush into one
//! object per partition.
//!
//! A record's partition is the values of the keys its stream's Prefix uses:
//! `!{partitionKeyFromQuery:k}` from the MetadataExtraction query (module
//! `jq`), `!{partitionKeyFromLambda:k}` from the transformation function's
//! `metadata.partitionKeys`. Each partition of a flush becomes one object
//! under its evaluated prefix, named by its own oldest record. A record
//! whose keys cannot be had (not JSON, the query fails, a key the prefix
//! uses is missing, a value the store cannot hold) goes to the error
//! output as `partitioning-failed`, code
//! [`EXTRACTION_FAILED`]; past the stream's active-partition limit (AWS's
//! 500 by default) a record of a new partition goes there with code
//! [`ACTIVE_PARTITION_EXCEEDED`]. The batch is checkpointed only after all
//! of its objects are written, so delivery stays at least once.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::prefix::{self, KeySource, PartitionKeys, Render, Template};
use crate::processing::Pipeline;

/// The error-output type of records that could not be partitioned.
pub const ERROR_OUTPUT_TYPE: &str = "partitioning-failed";
/// The error code of a record whose partition keys could not be had.
pub const EXTRACTION_FAILED: &str = "DynamicPartitioning.MetadataExtractionFailed";
/// The error code of a record past the active-partition limit.
pub const ACTIVE_PARTITION_EXCEEDED: &str = "DynamicPartitioning.ActivePartitionExceeded";

/// AWS's default quota of active partitions per delivery stream, and the
/// most it raises it to.
pub const DEFAULT_ACTIVE_PARTITIONS: usize = 500;
pub const MAX_ACTIVE_PARTITIONS: usize = 5000;

/// The smallest SizeInMBs AWS accepts with dynamic partitioning, and the
/// size used when BufferingHints gives none.
pub const MIN_SIZE_MB: u64 = 64;
pub const DEFAULT_SIZE_MB: u64 = 128;

/// AWS's default RetryOptions.DurationInSeconds.
pub const DEFAULT_RETRY_S: u64 = 300;

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Whether a destination has dynamic partitioning on.
pub fn enabled(d: &Map<String, Value>) -> bool {
    d.get("DynamicPartitioningConfiguration")
        .and_then(|c| c.get("Enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Checks a destination's dynamic partitioning against its prefixes and
/// processors, and fills AWS's default RetryOptions. Returns whether it is
/// enabled.
pub fn normalize(d: &mut Map<String, Value>, processing: &Pipeline) -> Result<bool> {
    let on = enabled(d);
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let prefix = text("Prefix");
    let error_prefix = text("ErrorOutputPrefix");
    prefix::validate_with(Some(&prefix), Some(&error_prefix), on).map_err(invalid)?;
    if !on {
        if processing.metadata.is_some() {
            return Err(invalid(
                "The MetadataExtraction processor can only be used when dynamic partitioning is enabled.",
            ));
        }
        return Ok(false);
    }
    let template = Template::parse(&prefix).map_err(invalid)?;
    let literal = processing
        .metadata
        .as_ref()
        .and_then(|q| crate::jq::literal_keys(q.text()));
    for (src, key) in template.partition_keys() {
        match src {
            KeySource::Query => match (&processing.metadata, &literal) {
                (None, _) => {
                    return Err(invalid(format!(
                        "Prefix uses !{{partitionKeyFromQuery:{key}}}, which needs a MetadataExtraction processor (enabled)."
                    )));
                }
                (Some(q), Some(keys)) if !keys.iter().any(|k| k == key) => {
                    return Err(invalid(format!(
                        "Prefix uses !{{partitionKeyFromQuery:{key}}}, but the MetadataExtractionQuery {} does not produce key {key}.",
                        q.text()
                    )));
                }
                _ => {}
            },
            KeySource::Lambda if processing.lambda.is_none() => {
                return Err(invalid(format!(
                    "Prefix uses !{{partitionKeyFromLambda:{key}}}, which needs a Lambda processor (enabled)."
                )));
            }
            KeySource::Lambda => {}
        }
    }
    if let Some(c) = d
        .get_mut("DynamicPartitioningConfiguration")
        .and_then(Value::as_object_mut)
    {
        let retry = c
            .entry("RetryOptions")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| {
                invalid("DynamicPartitioningConfiguration.RetryOptions must be an object.")
            })?;
        let secs = retry
            .get("DurationInSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_RETRY_S);
        if secs > 7200 {
            return Err(invalid(
                "RetryOptions.DurationInSeconds must be between 0 and 7200.",
            ));
        }
        retry.insert("DurationInSeconds".into(), json!(secs));
    }
    Ok(true)
}

/// The update rule AWS documents: dynamic partitioning cannot be turned on
/// for a stream created without it.
pub fn check_update(current: &Value, merged: &Map<String, Value>) -> Result<()> {
    let was = current.as_object().is_some_and(enabled);
    if !was && enabled(merged) {
        return Err(invalid(
            "Dynamic partitioning cannot be enabled on an existing Firehose stream that does not have it enabled: create a new stream.",
        ));
    }
    Ok(())
}

/// The engine's view of dynamic partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// Most partitions one flush may hold.
    pub limit: usize,
}

/// One record after processing, before partitioning.
#[derive(Debug, Clone)]
pub struct Rec {
    pub arrival_ms: i64,
    /// The record without its delimiter (a slice of the buffer's bytes,
    /// not a copy).
    pub data: bytes::Bytes,
    /// The function's `metadata.partitionKeys`, when it gave them.
    pub lambda_keys: Option<BTreeMap<String, String>>,
    /// The index in its buffer of the record it came from (a function's
    /// output record keeps its source's place).
    pub source: usize,
}

/// One partition of a flush: its keys, its records (delimited) and where
/// each ends.
#[derive(Debug, Clone)]
pub struct Part {
    pub keys: PartitionKeys,
    pub first_ms: i64,
    pub data: Vec<u8>,
    pub ends: Vec<(i64, usize)>,
}

/// A flush split by partition, and the error output of what could not be.
#[derive(Debug, Default)]
pub struct Split {
    pub parts: Vec<Part>,
    pub errors: Vec<u8>,
}

/// The error-output document of a record that could not be partitioned
/// (the shape of AWS's processing-failure records).
pub fn error_line(arrival_ms: i64, code: &str, message: &str, now_ms: i64, raw: &[u8]) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "attemptsMade": 1,
        "arrivalTimestamp": arrival_ms,
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": now_ms,
        "rawData": base64::engine::general_purpose::STANDARD.encode(raw),
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Splits a flush's records into partitions, in the order partitions first
/// appear (so a retried flush makes the same objects in the same order).
pub fn split(
    records: impl IntoIterator<Item = Rec>,
    prefix: &Template,
    pipeline: &Pipeline,
    zone: Option<&jiff::tz::TimeZone>,
    limit: usize,
    now_ms: i64,
) -> Split {
    let mut out = Split::default();
    let mut index: HashMap<PartitionKeys, usize> = HashMap::new();
    let used: Vec<(KeySource, String)> = prefix
        .partition_keys()
        .map(|(s, k)| (s, k.to_string()))
        .collect();
    for r in records {
        let mut all = PartitionKeys::new();
        if let Some(q) = &pipeline.metadata {
            match q.eval(&r.data) {
                Ok(keys) => {
                    all.extend(keys.into_iter().map(|(k, v)| ((KeySource::Query, k), v)));
                }
                Err(e) => {
                    out.errors.extend(error_line(
                        r.arrival_ms,
                        EXTRACTION_FAILED,
                        &e.to_string(),
                        now_ms,
                        &r.data,
                    ));
                    continue;
                }
            }
        }
        if let Some(l) = &r.lambda_keys {
            all.extend(
                l.iter()
                    .map(|(k, v)| ((KeySource::Lambda, k.clone()), v.clone())),
            );
        }
        let mut keys = PartitionKeys::new();
        let mut missing = None;
        for k in &used {
            match all.remove(k) {
                Some(v) => {
                    keys.insert(k.clone(), v);
                }
                None if keys.contains_key(k) => {}
                None => {
                    missing = Some(k);
                    break;
                }
            }
        }
        if let Some((src, k)) = missing {
            let from = match src {
                KeySource::Query => "the MetadataExtractionQuery's output",
                KeySource::Lambda => "the function's metadata.partitionKeys",
            };
            out.errors.extend(error_line(
                r.arrival_ms,
                EXTRACTION_FAILED,
                &format!("The partition key {k} is missing from {from}."),
                now_ms,
                &r.data,
            ));
            continue;
        }
        let i = match index.get(&keys) {
            Some(&i) => i,
            None => {
                let sample = prefix.render_with(
                    &Render {
                        keys: Some(&keys),
                        zone,
                        ..Render::utc(r.arrival_ms, None)
                    },
                    &mut rand::rng(),
                );
                if let Err(why) = prefix::check_rendered(&sample) {
                    out.errors.extend(error_line(
                        r.arrival_ms,
                        EXTRACTION_FAILED,
                        &why,
                        now_ms,
                        &r.data,
                    ));
                    continue;
                }
                if out.parts.len() >= limit {
                    out.errors.extend(error_line(
                        r.arrival_ms,
                        ACTIVE_PARTITION_EXCEEDED,
                        &format!(
                            "The Firehose stream has {limit} active partitions, its limit: the record's partition would be another."
                        ),
                        now_ms,
                        &r.data,
                    ));
                    continue;
                }
                out.parts.push(Part {
                    keys: keys.clone(),
                    first_ms: r.arrival_ms,
                    data: Vec::new(),
                    ends: Vec::new(),
                });
                index.insert(keys, out.parts.len() - 1);
                out.parts.len() - 1
            }
        };
        let p = &mut out.parts[i];
        p.first_ms = p.first_ms.min(r.arrival_ms);
        pipeline.finish(&r.data, &mut p.data);
        p.ends.push((r.arrival_ms, p.data.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::pipeline;

    fn pipe(query: &str) -> Pipeline {
        let mut p = pipeline(Some(&json!({"Enabled": true, "Processors": [
            {"Type": "MetadataExtraction", "Parameters": [
                {"ParameterName": "MetadataExtractionQuery", "ParameterValue": query},
                {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
            {"Type": "AppendDelimiterToRecord"}]})))
        .unwrap();
        p.defer_delimiter = true;
        p
    }

    fn rec(ms: i64, d: &str) -> Rec {
        Rec {
            arrival_ms: ms,
            data: bytes::Bytes::copy_from_slice(d.as_bytes()),
            lambda_keys: None,
            source: 0,
        }
    }

    #[test]
    fn records_split_by_their_keys() {
        let p = pipe("{c: .c}");
        let t = Template::parse("c=!{partitionKeyFromQuery:c}/").unwrap();
        let s = split(
            vec![
                rec(5, r#"{"c":"a","n":1}"#),
                rec(3, r#"{"c":"b","n":2}"#),
                rec(9, r#"{"c":"a","n":3}"#),
                rec(1, r#"{"n":4}"#),
                rec(2, "oops"),
                rec(2, r#"{"c":"a/../b"}"#),
            ],
            &t,
            &p,
            None,
            500,
            77,
        );
        assert_eq!(s.parts.len(), 2);
        assert_eq!(
            s.parts[0].data,
            b"{\"c\":\"a\",\"n\":1}\n{\"c\":\"a\",\"n\":3}\n"
        );
        assert_eq!(s.parts[0].first_ms, 5);
        assert_eq!(s.parts[0].ends, vec![(5, 16), (9, 32)]);
        assert_eq!(s.parts[1].first_ms, 3);
        let errors: Vec<Value> = s
            .errors
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|e| e["errorCode"] == EXTRACTION_FAILED));
        assert!(
            errors[0]["errorMessage"]
                .as_str()
                .unwrap()
                .contains("missing")
        );
        assert_eq!(errors[1]["rawData"], "b29wcw==");
        assert_eq!(errors[1]["attemptEndingTimestamp"], 77);
    }

    #[test]
    fn partitions_past_the_limit_fail() {
        let p = pipe("{c: .c}");
        let t = Template::parse("!{partitionKeyFromQuery:c}/").unwrap();
        let recs = (0..5).map(|i| rec(i, &format!(r#"{{"c":{}}}"#, i % 3)));
        let s = split(recs, &t, &p, None, 2, 0);
        assert_eq!(s.parts.len(), 2);
        // Records 0, 1, 3 and 4 fit (partitions 0 and 1); 2 does not.
        assert_eq!(s.parts[0].ends.len() + s.parts[1].ends.len(), 4);
        let text = String::from_utf8(s.errors).unwrap();
        assert_eq!(text.matches(ACTIVE_PARTITION_EXCEEDED).count(), 1);
    }

    #[test]
    fn lambda_keys_partition_too() {
        let p = Pipeline {
            defer_delimiter: true,
            ..Default::default()
        };
        let t = Template::parse("!{partitionKeyFromLambda:k}/").unwrap();
        let with = |k: &str| Rec {
            lambda_keys: Some([("k".to_string(), k.to_string())].into()),
            source: 0,
            ..rec(1, "x")
        };
        let s = split(
            vec![with("a"), with("b"), rec(1, "y")],
            &t,
            &p,
            None,
            500,
            0,
        );
        assert_eq!(s.parts.len(), 2);
        assert!(
            String::from_utf8(s.errors)
                .unwrap()
                .contains("metadata.partitionKeys")
        );
    }

    #[test]
    fn configuration_rules() {
        let base = |extra: Value| {
            let mut m =
                json!({"Prefix": "c=!{partitionKeyFromQuery:c}/", "ErrorOutputPrefix": "e/",
                "DynamicPartitioningConfiguration": {"Enabled": true}})
                .as_object()
                .cloned()
                .unwrap();
            m.extend(extra.as_object().cloned().unwrap());
            m
        };
        let mut d = base(json!({}));
        assert!(normalize(&mut d, &pipe("{c: .c}")).unwrap());
        assert_eq!(
            d["DynamicPartitioningConfiguration"]["RetryOptions"]["DurationInSeconds"],
            300
        );
        let e = normalize(&mut base(json!({})), &pipe("{d: .d}")).unwrap_err();
        assert!(e.to_string().contains("does not produce key c"), "{e}");
        let e = normalize(&mut base(json!({})), &Pipeline::default()).unwrap_err();
        assert!(e.to_string().contains("needs a MetadataExtraction"), "{e}");
        let e = normalize(
            &mut base(json!({"Prefix": "!{partitionKeyFromLambda:x}/"})),
            &Pipeline::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs a Lambda"), "{e}");
        // Dynamic keys: checked per record instead.
        assert!(normalize(&mut base(json!({})), &pipe("{(.k): .v}")).is_ok());
        let mut off = json!({"Prefix": "p/"}).as_object().cloned().unwrap();
        assert!(normalize(&mut off, &pipe("{c: .c}")).is_err());
        let cur = json!({"Prefix": "p/"});
        assert!(check_update(&cur, &base(json!({}))).is_err());
        assert!(check_update(&Value::Object(base(json!({}))), &base(json!({}))).is_ok());
    }
}
