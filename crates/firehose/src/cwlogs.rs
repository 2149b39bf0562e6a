//! The Decompression and CloudWatchLogProcessing processors: CloudWatch
//! Logs subscription filters send Firehose gzip-compressed JSON documents
//! (`messageType`, `logGroup`, `logEvents` with `message`s); Decompression
//! inflates them and CloudWatchLogProcessing with DataMessageExtraction
//! makes each log event's message a record of its own, dropping the
//! `CONTROL_MESSAGE`s CloudWatch Logs sends to check the destination.

use std::io::Read;

use serde::Deserialize;

/// The error-output type of records that could not be decompressed, as AWS
/// names it.
pub const DECOMPRESSION_FAILED: &str = "decompression-failed";

/// Most bytes one record may inflate to: a bound on what a small
/// compressed record (a "gzip bomb") can make the server allocate.
pub const MAX_INFLATED: usize = 16 << 20;

/// Why a record could not be processed: the error output's type, code and
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error_type: &'static str,
    pub code: &'static str,
    pub message: String,
}

/// Inflates a gzip record (every member of it).
pub fn gunzip(record: &[u8]) -> Result<Vec<u8>, Failure> {
    let fail = |m: String| Failure {
        error_type: DECOMPRESSION_FAILED,
        code: "Decompression.InvalidData",
        message: m,
    };
    let mut out = Vec::with_capacity(record.len() * 4);
    flate2::read::MultiGzDecoder::new(record)
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| fail(format!("The record is not valid GZIP data: {e}")))?;
    if out.len() > MAX_INFLATED {
        return Err(fail(format!(
            "The record inflates to more than {MAX_INFLATED} bytes."
        )));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    message_type: String,
    #[serde(default)]
    log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
struct LogEvent {
    message: String,
}

/// The log events' messages of a CloudWatch Logs subscription document
/// (none for a control message).
pub fn extract_messages(doc: &[u8]) -> Result<Vec<Vec<u8>>, Failure> {
    let fail = |m: String| Failure {
        error_type: "processing-failed",
        code: "CloudWatchLogs.InvalidData",
        message: m,
    };
    let s: Subscription = serde_json::from_slice(doc).map_err(|e| {
        fail(format!(
            "The record is not a CloudWatch Logs subscription document: {e}"
        ))
    })?;
    match s.message_type.as_str() {
        "CONTROL_MESSAGE" => Ok(Vec::new()),
        "DATA_MESSAGE" => Ok(s
            .log_events
            .into_iter()
            .map(|e| e.message.into_bytes())
            .collect()),
        other => Err(fail(format!(
            "The record's messageType {other} is neither DATA_MESSAGE nor CONTROL_MESSAGE."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn subscription_documents_become_messages() {
        let doc = br#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"g","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":1,"message":"one"},{"id":"2","timestamp":2,"message":"{\"a\":2}"}]}"#;
        let inflated = gunzip(&gz(doc)).unwrap();
        assert_eq!(
            extract_messages(&inflated).unwrap(),
            vec![b"one".to_vec(), b"{\"a\":2}".to_vec()]
        );
        let control = br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}"#;
        assert!(extract_messages(control).unwrap().is_empty());
        assert_eq!(
            extract_messages(b"nope").unwrap_err().code,
            "CloudWatchLogs.InvalidData"
        );
    }

    #[test]
    fn bad_and_oversized_gzip_fail() {
        let e = gunzip(b"plain").unwrap_err();
        assert_eq!(e.error_type, DECOMPRESSION_FAILED);
        let bomb = gz(&vec![0u8; MAX_INFLATED + 1]);
        assert!(gunzip(&bomb).unwrap_err().message.contains("inflates"));
        // Concatenated members are one record.
        let mut two = gz(b"a");
        two.extend(gz(b"b"));
        assert_eq!(gunzip(&two).unwrap(), b"ab");
    }
}
