//! Data processing (ProcessingConfiguration): the checks at create/update
//! time and the per-record pipeline the delivery engine applies before a
//! record enters the buffer.
//!
//! Every processor type the model names is applied, in AWS's order
//! whatever the order they are listed in: Decompression,
//! CloudWatchLogProcessing (module `cwlogs`), RecordDeAggregation, Lambda
//! (a configured function, module `lambda`), MetadataExtraction (a JQ
//! query, module `jq`, for dynamic partitioning; applied by module
//! `partition` at flush time) and AppendDelimiterToRecord last.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use crate::cwlogs::{self, Failure};

use crate::error::{Error, Result};

/// `ProcessorType` in the model.
const TYPES: &[&str] = &[
    "RecordDeAggregation",
    "Decompression",
    "CloudWatchLogProcessing",
    "Lambda",
    "MetadataExtraction",
    "AppendDelimiterToRecord",
];

/// `ProcessorParameterName` in the model.
const PARAMETER_NAMES: &[&str] = &[
    "LambdaArn",
    "NumberOfRetries",
    "MetadataExtractionQuery",
    "JsonParsingEngine",
    "RoleArn",
    "BufferSizeInMBs",
    "BufferIntervalInSeconds",
    "SubRecordType",
    "Delimiter",
    "CompressionFormat",
    "DataMessageExtraction",
];

/// The parameters each processor type takes (AWS refuses the others).
fn allowed_parameters(ty: &str) -> &'static [&'static str] {
    match ty {
        "Lambda" => &[
            "LambdaArn",
            "NumberOfRetries",
            "RoleArn",
            "BufferSizeInMBs",
            "BufferIntervalInSeconds",
        ],
        "RecordDeAggregation" => &["SubRecordType", "Delimiter"],
        "AppendDelimiterToRecord" => &["Delimiter"],
        "MetadataExtraction" => &["MetadataExtractionQuery", "JsonParsingEngine"],
        "Decompression" => &["CompressionFormat"],
        "CloudWatchLogProcessing" => &["DataMessageExtraction"],
        _ => &[],
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// How RecordDeAggregation splits a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeAggregation {
    /// Concatenated JSON objects, one sub-record each.
    Json,
    /// Sub-records separated by this delimiter.
    Delimited(Vec<u8>),
}

/// The processing the engine applies to each record, in AWS's order:
/// de-aggregation first, the delimiter last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    /// Decompression (GZIP, the only CompressionFormat AWS has for it).
    pub decompression: bool,
    /// CloudWatchLogProcessing with DataMessageExtraction true.
    pub cloudwatch_extraction: bool,
    pub deaggregation: Option<DeAggregation>,
    /// Between the two: the configured function.
    pub lambda: Option<LambdaProcessor>,
    /// MetadataExtraction's compiled query.
    pub metadata: Option<Arc<crate::jq::Query>>,
    pub append_delimiter: Option<Vec<u8>>,
    /// The delimiter waits for the flush (dynamic partitioning reads each
    /// record as it was before the delimiter).
    pub defer_delimiter: bool,
}

/// A Lambda processor's parameters, AWS's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaProcessor {
    pub arn: String,
    /// The configured function the ARN names.
    pub function: String,
    pub retries: u32,
    /// Most bytes of record data per invocation.
    pub batch_bytes: usize,
}

/// Whether a ProcessingConfiguration is in effect: `Enabled` when given,
/// else whether it lists processors (as AWS reads it).
pub fn is_enabled(p: &Value) -> bool {
    let has_processors = p
        .get("Processors")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    p.get("Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(has_processors)
}

/// The parameters of a processor as (name, value) pairs, checked against
/// the model's enum and the processor type.
fn parameters<'a>(ty: &str, proc_: &'a Value) -> Result<Vec<(&'a str, &'a str)>> {
    let mut out = Vec::new();
    let Some(list) = proc_.get("Parameters") else {
        return Ok(out);
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid("Processor.Parameters must be a list."))?;
    for p in list {
        let name = p
            .get("ParameterName")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("ProcessorParameter.ParameterName is required."))?;
        let value = p
            .get("ParameterValue")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("ProcessorParameter.ParameterValue is required."))?;
        if !PARAMETER_NAMES.contains(&name) {
            return Err(invalid(format!(
                "Unknown ProcessorParameterName {name}: expected one of {}.",
                PARAMETER_NAMES.join(", ")
            )));
        }
        if !allowed_parameters(ty).contains(&name) {
            return Err(invalid(format!(
                "Processor parameter {name} is not valid for processor type {ty}."
            )));
        }
        if value.is_empty() || value.len() > 5120 || value.trim().is_empty() {
            return Err(invalid(format!(
                "Processor parameter {name} must have a value of 1 to 5120 characters that is not only whitespace."
            )));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!(
                "Processor parameter {name} is given more than once for processor type {ty}."
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// `\n`, `\r`, `\t` and `\\` as written in consoles and templates, the
/// rest as is: the delimiter AppendDelimiterToRecord appends.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some(o) => {
                out.push(b'\\');
                let mut b = [0; 4];
                out.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

/// Checks a ProcessingConfiguration and builds its pipeline (the default
/// one when it is disabled or absent).
pub fn pipeline(p: Option<&Value>) -> Result<Pipeline> {
    let mut out = Pipeline::default();
    let Some(p) = p else {
        return Ok(out);
    };
    if !p.is_object() {
        return Err(invalid("ProcessingConfiguration must be an object."));
    }
    let processors = match p.get("Processors") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => &a[..],
        Some(_) => {
            return Err(invalid(
                "ProcessingConfiguration.Processors must be a list.",
            ));
        }
    };
    let enabled = is_enabled(p);
    let mut seen: Vec<&str> = Vec::new();
    for proc_ in processors {
        let ty = proc_
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("Processor.Type is required."))?;
        if !TYPES.contains(&ty) {
            return Err(invalid(format!(
                "Unknown processor Type {ty}: expected one of {}.",
                TYPES.join(", ")
            )));
        }
        if seen.contains(&ty) {
            return Err(invalid(format!(
                "Processor type {ty} is given more than once."
            )));
        }
        seen.push(ty);
        let params = parameters(ty, proc_)?;
        let param = |n: &str| params.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        if !enabled {
            // Stored as given, applied once enabled (checked again then).
            continue;
        }
        match ty {
            "AppendDelimiterToRecord" => {
                out.append_delimiter =
                    Some(param("Delimiter").map(unescape).unwrap_or(vec![b'\n']));
            }
            "RecordDeAggregation" => {
                let d = match param("SubRecordType") {
                    None | Some("JSON") => {
                        if param("Delimiter").is_some() {
                            return Err(invalid(
                                "RecordDeAggregation takes a Delimiter only with SubRecordType DELIMITED.",
                            ));
                        }
                        DeAggregation::Json
                    }
                    Some("DELIMITED") => {
                        let d = param("Delimiter").ok_or_else(|| {
                            invalid(
                                "RecordDeAggregation with SubRecordType DELIMITED needs a Delimiter (base64-encoded).",
                            )
                        })?;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(d)
                            .ok()
                            .filter(|b| !b.is_empty())
                            .ok_or_else(|| {
                                invalid(format!(
                                    "The RecordDeAggregation Delimiter must be base64-encoded; {d} is not."
                                ))
                            })?;
                        DeAggregation::Delimited(bytes)
                    }
                    Some(o) => {
                        return Err(invalid(format!(
                            "SubRecordType {o} is not valid: expected JSON or DELIMITED."
                        )));
                    }
                };
                out.deaggregation = Some(d);
            }
            "Lambda" => {
                let arn = param("LambdaArn")
                    .ok_or_else(|| invalid("The Lambda processor needs a LambdaArn parameter."))?;
                let function = crate::lambda::function_name(arn).ok_or_else(|| {
                    invalid(format!(
                        "LambdaArn {arn} is not arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]."
                    ))
                })?;
                let retries = match param("NumberOfRetries") {
                    None => 3,
                    Some(n) => n.parse::<u32>().ok().filter(|n| *n <= 300).ok_or_else(|| {
                        invalid(format!(
                            "NumberOfRetries must be an integer from 0 to 300, not {n}."
                        ))
                    })?,
                };
                let mb = match param("BufferSizeInMBs") {
                    None => 1.0,
                    Some(n) => n
                        .parse::<f64>()
                        .ok()
                        .filter(|n| (0.2..=3.0).contains(n))
                        .ok_or_else(|| {
                            invalid(format!("BufferSizeInMBs must be from 0.2 to 3, not {n}."))
                        })?,
                };
                if let Some(n) = param("BufferIntervalInSeconds")
                    && n.parse::<u32>().ok().filter(|n| *n <= 900).is_none()
                {
                    return Err(invalid(format!(
                        "BufferIntervalInSeconds must be an integer from 0 to 900, not {n}."
                    )));
                }
                // base64 grows the data by 4/3: keep the request under
                // Lambda's payload limit whatever the buffer size.
                let batch_bytes = ((mb * 1024.0 * 1024.0) as usize)
                    .min(crate::lambda::PAYLOAD_LIMIT / 4 * 3 - 64 * 1024);
                out.lambda = Some(LambdaProcessor {
                    arn: arn.to_string(),
                    function: function.to_string(),
                    retries,
                    batch_bytes,
                });
            }
            "Decompression" => match param("CompressionFormat") {
                None | Some("GZIP") => out.decompression = true,
                Some(o) => {
                    return Err(invalid(format!(
                        "CompressionFormat {o} is not valid for the Decompression processor: expected GZIP."
                    )));
                }
            },
            "CloudWatchLogProcessing" => match param("DataMessageExtraction") {
                Some("true") => out.cloudwatch_extraction = true,
                Some("false") => {}
                Some(o) => {
                    return Err(invalid(format!(
                        "DataMessageExtraction must be true or false, not {o}."
                    )));
                }
                None => {
                    return Err(invalid(
                        "The CloudWatchLogProcessing processor needs a DataMessageExtraction parameter.",
                    ));
                }
            },
            "MetadataExtraction" => {
                let q = param("MetadataExtractionQuery").ok_or_else(|| {
                    invalid("The MetadataExtraction processor needs a MetadataExtractionQuery parameter.")
                })?;
                match param("JsonParsingEngine") {
                    Some("JQ-1.6") => {}
                    Some(o) => {
                        return Err(invalid(format!(
                            "JsonParsingEngine {o} is not valid: expected JQ-1.6."
                        )));
                    }
                    None => {
                        return Err(invalid(
                            "The MetadataExtraction processor needs a JsonParsingEngine parameter (JQ-1.6).",
                        ));
                    }
                }
                out.metadata = Some(crate::jq::compile(q).map_err(invalid)?);
            }
            other => {
                return Err(invalid(format!("Processor type {other} is not supported.")));
            }
        }
    }
    if out.cloudwatch_extraction && !out.decompression {
        return Err(invalid(
            "The CloudWatchLogProcessing processor needs a Decompression processor before it.",
        ));
    }
    Ok(out)
}

/// Splits concatenated JSON values; `None` when the record is not a run of
/// JSON values (it is then kept whole).
fn split_json(record: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(record).into_iter::<serde::de::IgnoredAny>();
    let mut start = 0;
    while let Some(v) = it.next() {
        v.ok()?;
        let end = it.byte_offset();
        let sub = record[start..end].trim_ascii();
        if !sub.is_empty() {
            out.push(sub);
        }
        start = end;
    }
    Some(out)
}

impl Pipeline {
    pub fn is_identity(&self) -> bool {
        self.deaggregation.is_none()
            && self.append_delimiter.is_none()
            && self.lambda.is_none()
            && !self.decompression
    }

    /// Checks that the function a Lambda processor names is configured.
    pub fn check_functions(&self, functions: &crate::lambda::Functions) -> Result<()> {
        match &self.lambda {
            Some(l) if !functions.contains_key(&l.function) => Err(invalid(format!(
                "The Lambda function {} ({}) is not configured on this server: add [functions.{}] to its configuration.",
                l.function, l.arn, l.function
            ))),
            _ => Ok(()),
        }
    }

    /// The delimiter step alone (after the function).
    pub fn finish(&self, record: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(record);
        if let Some(d) = &self.append_delimiter {
            out.extend_from_slice(d);
        }
    }

    /// Processes one record, handing each resulting record to `out`.
    /// Returns whether a JSON de-aggregation failed (the record then
    /// passes whole).
    pub fn apply(&self, record: &[u8], out: impl FnMut(&[u8])) -> bool {
        self.apply_checked(record, out).unwrap_or(false)
    }

    /// [`Pipeline::apply`] with Decompression and CloudWatchLogProcessing
    /// first: a record they cannot read is a [`Failure`] (for the error
    /// output), and hands nothing to `out`.
    pub fn apply_checked(
        &self,
        record: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> std::result::Result<bool, Failure> {
        if !self.decompression {
            return Ok(self.apply_plain(record, &mut out));
        }
        let inflated = cwlogs::gunzip(record)?;
        if !self.cloudwatch_extraction {
            return Ok(self.apply_plain(&inflated, &mut out));
        }
        let mut failed = false;
        for m in cwlogs::extract_messages(&inflated)? {
            failed |= self.apply_plain(&m, &mut out);
        }
        Ok(failed)
    }

    fn apply_plain(&self, record: &[u8], mut out: impl FnMut(&[u8])) -> bool {
        // With a function (or dynamic partitioning), the delimiter waits
        // until after it (`finish`).
        let delimiter = if self.lambda.is_some() || self.defer_delimiter {
            &None
        } else {
            &self.append_delimiter
        };
        let mut emit = |r: &[u8]| match delimiter {
            None => out(r),
            Some(d) => {
                let mut v = Vec::with_capacity(r.len() + d.len());
                v.extend_from_slice(r);
                v.extend_from_slice(d);
                out(&v)
            }
        };
        match &self.deaggregation {
            None => emit(record),
            Some(DeAggregation::Json) => match split_json(record) {
                Some(subs) => subs.into_iter().for_each(&mut emit),
                None => {
                    emit(record);
                    return true;
                }
            },
            Some(DeAggregation::Delimited(d)) => {
                let mut rest = record;
                while let Some(at) = find(rest, d) {
                    if at > 0 {
                        emit(&rest[..at]);
                    }
                    rest = &rest[at + d.len()..];
                }
                if !rest.is_empty() {
                    emit(rest);
                }
            }
        }
        false
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(p: &Pipeline, r: &[u8]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        p.apply(r, |x| v.push(x.to_vec()));
        v
    }

    fn cfg(procs: Value) -> Value {
        json!({"Enabled": true, "Processors": procs})
    }

    #[test]
    fn append_delimiter_defaults_to_newline() {
        let p = pipeline(Some(&cfg(json!([{"Type": "AppendDelimiterToRecord"}])))).unwrap();
        assert_eq!(run(&p, b"a"), vec![b"a\n".to_vec()]);
        let p = pipeline(Some(&cfg(json!([{"Type": "AppendDelimiterToRecord",
            "Parameters": [{"ParameterName": "Delimiter", "ParameterValue": "\\r\\n"}]}]))))
        .unwrap();
        assert_eq!(run(&p, b"a"), vec![b"a\r\n".to_vec()]);
    }

    #[test]
    fn json_deaggregation_then_delimiter() {
        // Listed delimiter first: AWS still appends it after splitting.
        let p = pipeline(Some(&cfg(json!([
            {"Type": "AppendDelimiterToRecord"},
            {"Type": "RecordDeAggregation", "Parameters": [{"ParameterName": "SubRecordType", "ParameterValue": "JSON"}]}
        ]))))
        .unwrap();
        assert_eq!(
            run(&p, b"{\"a\":1} {\"a\":{\"b\":\"}{\"}}\n{\"a\":3}"),
            vec![
                b"{\"a\":1}\n".to_vec(),
                b"{\"a\":{\"b\":\"}{\"}}\n".to_vec(),
                b"{\"a\":3}\n".to_vec()
            ]
        );
        // Not JSON: kept whole.
        let mut n = 0;
        assert!(p.apply(b"{\"a\":1}{oops", |_| n += 1));
        assert_eq!(n, 1);
    }

    #[test]
    fn delimited_deaggregation_takes_base64() {
        // "||" is fHw= in base64.
        let p = pipeline(Some(&cfg(
            json!([{"Type": "RecordDeAggregation", "Parameters": [
            {"ParameterName": "SubRecordType", "ParameterValue": "DELIMITED"},
            {"ParameterName": "Delimiter", "ParameterValue": "fHw="}]}]),
        )))
        .unwrap();
        assert_eq!(
            run(&p, b"a||bc||||d||"),
            vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]
        );
        assert!(
            pipeline(Some(&cfg(
                json!([{"Type": "RecordDeAggregation", "Parameters": [
            {"ParameterName": "SubRecordType", "ParameterValue": "DELIMITED"},
            {"ParameterName": "Delimiter", "ParameterValue": "|%|"}]}])
            )))
            .is_err()
        );
    }

    #[test]
    fn cloudwatch_logs_are_inflated_and_extracted_in_awss_order() {
        use std::io::Write;
        // Listed out of order: applied Decompression, CloudWatch, delimiter.
        let p = pipeline(Some(&cfg(json!([
            {"Type": "AppendDelimiterToRecord"},
            {"Type": "CloudWatchLogProcessing", "Parameters": [{"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]},
            {"Type": "Decompression", "Parameters": [{"ParameterName": "CompressionFormat", "ParameterValue": "GZIP"}]}
        ]))))
        .unwrap();
        let doc = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","timestamp":1,"message":"a"},{"id":"2","timestamp":2,"message":"b"}]}"#;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(doc).unwrap();
        let gz = e.finish().unwrap();
        let mut v = Vec::new();
        assert_eq!(p.apply_checked(&gz, |r| v.push(r.to_vec())), Ok(false));
        assert_eq!(v, vec![b"a\n".to_vec(), b"b\n".to_vec()]);
        let f = p.apply_checked(b"not gzip", |_| panic!()).unwrap_err();
        assert_eq!(f.error_type, "decompression-failed");
        // Decompression alone: the inflated document is the record.
        let p = pipeline(Some(&cfg(json!([{"Type": "Decompression"}])))).unwrap();
        let mut v = Vec::new();
        p.apply_checked(&gz, |r| v.push(r.to_vec())).unwrap();
        assert_eq!(v, vec![doc.to_vec()]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        for (procs, msg) in [
            (json!([{"Type": "Nope"}]), "Unknown processor Type"),
            (
                json!([{"Type": "AppendDelimiterToRecord", "Parameters": [{"ParameterName": "Bogus", "ParameterValue": "x"}]}]),
                "Unknown ProcessorParameterName",
            ),
            (
                json!([{"Type": "AppendDelimiterToRecord", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "x"}]}]),
                "not valid for processor type",
            ),
            (
                json!([{"Type": "RecordDeAggregation", "Parameters": [{"ParameterName": "SubRecordType", "ParameterValue": "CSV"}]}]),
                "SubRecordType",
            ),
            (
                json!([{"Type": "RecordDeAggregation", "Parameters": [{"ParameterName": "SubRecordType", "ParameterValue": "DELIMITED"}]}]),
                "needs a Delimiter",
            ),
            (
                json!([{"Type": "Decompression", "Parameters": [{"ParameterName": "CompressionFormat", "ParameterValue": "ZIP"}]}]),
                "expected GZIP",
            ),
            (
                json!([{"Type": "CloudWatchLogProcessing", "Parameters": [{"ParameterName": "DataMessageExtraction", "ParameterValue": "true"}]}]),
                "needs a Decompression",
            ),
            (
                json!([{"Type": "MetadataExtraction", "Parameters": [{"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{a: .a}"}]}]),
                "JsonParsingEngine",
            ),
            (
                json!([{"Type": "MetadataExtraction", "Parameters": [{"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{a: ..}"}, {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]}]),
                "not allowed",
            ),
            (
                json!([{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:s3:::x"}]}]),
                "LambdaArn",
            ),
            (
                json!([{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:f"}, {"ParameterName": "BufferSizeInMBs", "ParameterValue": "4"}]}]),
                "BufferSizeInMBs",
            ),
            (
                json!([{"Type": "AppendDelimiterToRecord"}, {"Type": "AppendDelimiterToRecord"}]),
                "more than once",
            ),
        ] {
            let e = pipeline(Some(&cfg(procs.clone()))).unwrap_err();
            assert_eq!(e.code(), "InvalidArgumentException");
            assert!(e.to_string().contains(msg), "{procs}: {e}");
        }
        let p = pipeline(Some(&cfg(json!([{"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:f:live"}]}])))).unwrap();
        let l = p.lambda.clone().unwrap();
        assert_eq!(
            (l.function.as_str(), l.retries, l.batch_bytes),
            ("f", 3, 1 << 20)
        );
        let e = p.check_functions(&Default::default()).unwrap_err();
        assert!(e.to_string().contains("Lambda function f"), "{e}");
        // Disabled: checked for shape, not applied.
        let p = pipeline(Some(
            &json!({"Enabled": false, "Processors": [{"Type": "Lambda"}]}),
        ))
        .unwrap();
        assert!(p.is_identity());
    }
}
