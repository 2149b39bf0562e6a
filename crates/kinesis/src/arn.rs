//! Kinesis ARNs, parsed strictly into one canonical form.
//!
//! Authorization compares ARNs as strings, so two spellings of one resource
//! (another partition, a case variant, a consumer timestamp with leading
//! zeros) must never both be accepted: a policy that denies one spelling would
//! not deny the other. Every ARN a request gives is parsed here, refused unless
//! it is this server's, and rebuilt from its parts; the operation then acts on
//! exactly the resource whose canonical ARN was authorized.

use crate::{Error, Result};

pub use ripstream_iam::partition;

/// What a Kinesis ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KinesisArn {
    Stream {
        stream: String,
    },
    Consumer {
        stream: String,
        consumer: String,
        /// The consumer's creation time in seconds, as the ARN carries it.
        created_secs: i64,
    },
}

/// Stream and consumer names: 1 to 128 of `[a-zA-Z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// A decimal without sign, leading zeros or anything else, that fits an i64.
fn canonical_secs(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Parses and checks ARNs against this server's partition, region and account.
#[derive(Debug, Clone, Copy)]
pub struct ArnScope<'a> {
    pub region: &'a str,
    pub account: &'a str,
}

impl ArnScope<'_> {
    /// The canonical ARN of a stream.
    pub fn stream_arn(&self, stream: &str) -> String {
        format!(
            "arn:{}:kinesis:{}:{}:stream/{stream}",
            partition(self.region),
            self.region,
            self.account
        )
    }

    /// The canonical ARN of a consumer.
    pub fn consumer_arn(&self, stream: &str, consumer: &str, created_secs: i64) -> String {
        format!(
            "{}/consumer/{consumer}:{created_secs}",
            self.stream_arn(stream)
        )
    }

    /// Parses an ARN of a stream or consumer of this server.
    ///
    /// `what` names the member in error messages (`StreamARN`, `ConsumerARN`,
    /// `ResourceARN`). A well-formed ARN of another partition, region or
    /// account names a stream this server does not have: ResourceNotFound.
    pub fn parse(&self, arn: &str, what: &str) -> Result<KinesisArn> {
        let invalid = || Error::InvalidArgument(format!("Invalid {what} {arn}."));
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(part), Some("kinesis"), Some(region), Some(account), Some(res)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let stream_and_rest = res.strip_prefix("stream/").ok_or_else(invalid)?;
        let parsed = match stream_and_rest.split_once("/consumer/") {
            None => {
                if !valid_name(stream_and_rest) {
                    return Err(invalid());
                }
                KinesisArn::Stream {
                    stream: stream_and_rest.to_string(),
                }
            }
            Some((stream, rest)) => {
                let (consumer, secs) = rest.rsplit_once(':').ok_or_else(invalid)?;
                let created_secs = canonical_secs(secs).ok_or_else(invalid)?;
                if !valid_name(stream) || !valid_name(consumer) {
                    return Err(invalid());
                }
                KinesisArn::Consumer {
                    stream: stream.to_string(),
                    consumer: consumer.to_string(),
                    created_secs,
                }
            }
        };
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if !account_ok || region.is_empty() {
            return Err(invalid());
        }
        if part != partition(self.region) || region != self.region || account != self.account {
            let name = match &parsed {
                KinesisArn::Stream { stream } => stream.clone(),
                KinesisArn::Consumer { consumer, .. } => consumer.clone(),
            };
            let kind = match parsed {
                KinesisArn::Stream { .. } => "Stream",
                KinesisArn::Consumer { .. } => "Consumer",
            };
            return Err(Error::ResourceNotFound(format!(
                "{kind} {name} under account {account} not found."
            )));
        }
        Ok(parsed)
    }

    /// The canonical spelling of a parsed ARN.
    pub fn canonical(&self, arn: &KinesisArn) -> String {
        match arn {
            KinesisArn::Stream { stream } => self.stream_arn(stream),
            KinesisArn::Consumer {
                stream,
                consumer,
                created_secs,
            } => self.consumer_arn(stream, consumer, *created_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: ArnScope<'static> = ArnScope {
        region: "us-east-1",
        account: "000000000000",
    };

    #[test]
    fn canonical_arns_round_trip() {
        for arn in [
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders",
            "arn:aws:kinesis:us-east-1:000000000000:stream/a.b-c_d/consumer/c1:1700000000",
            "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:0",
        ] {
            let p = HERE.parse(arn, "ResourceARN").unwrap();
            assert_eq!(HERE.canonical(&p), arn);
        }
    }

    #[test]
    fn spellings_that_could_dodge_a_deny_are_refused() {
        let not_found = [
            "arn:aws-cn:kinesis:us-east-1:000000000000:stream/orders",
            "arn:aws-us-gov:kinesis:us-east-1:000000000000:stream/orders",
            "arn:aws:kinesis:us-west-2:000000000000:stream/orders",
            "arn:aws:kinesis:us-east-1:111111111111:stream/orders",
        ];
        for arn in not_found {
            let e = HERE.parse(arn, "StreamARN").unwrap_err();
            assert!(matches!(e, Error::ResourceNotFound(_)), "{arn}: {e:?}");
        }
        let invalid = [
            "ARN:aws:kinesis:us-east-1:000000000000:stream/orders",
            "arn:aws:Kinesis:us-east-1:000000000000:stream/orders",
            "arn:aws:kinesis:us-east-1:000000000000:Stream/orders",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:0017",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:+17",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:99999999999999999999",
            "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/:17",
            "arn:aws:kinesis:us-east-1:000000000000:stream/or ders",
            "arn:aws:kinesis:us-east-1:000000000000:stream/",
            "arn:aws:kinesis:us-east-1:00000000000a:stream/orders",
            "arn:aws:kinesis::000000000000:stream/orders",
        ];
        for arn in invalid {
            let e = HERE.parse(arn, "StreamARN").unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{arn}: {e:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, an accepted ARN is already canonical: no
        /// two spellings of one resource both parse, so a policy naming the
        /// canonical ARN sees every request that reaches the resource.
        #[test]
        fn fuzz_accepted_arns_have_one_spelling(
            part in "(arn|ARN|Arn)",
            partition in "(aws|aws-cn|AWS|aws-us-gov|)",
            service in "(kinesis|Kinesis|)",
            region in "(us-east-1|US-EAST-1|us-east-1 |)",
            account in "(000000000000|0000000000000|00000000000|)",
            kind in "(stream|Stream|streams)",
            name in "[a-zA-Z0-9_.:/ -]{0,12}",
            consumer in proptest::option::of("[a-zA-Z0-9_.:-]{0,8}"),
            secs in "(0|00|01|[0-9]{1,21}|-1|\\+1| 1)",
        ) {
            let mut arn = format!("{part}:{partition}:{service}:{region}:{account}:{kind}/{name}");
            if let Some(c) = consumer {
                arn.push_str(&format!("/consumer/{c}:{secs}"));
            }
            if let Ok(parsed) = HERE.parse(&arn, "ResourceARN") {
                proptest::prop_assert_eq!(HERE.canonical(&parsed), arn);
            }
        }
    }

    #[test]
    fn partitions_follow_the_region() {
        let cn = ArnScope {
            region: "cn-north-1",
            account: "000000000000",
        };
        assert_eq!(
            cn.stream_arn("s"),
            "arn:aws-cn:kinesis:cn-north-1:000000000000:stream/s"
        );
        assert!(
            cn.parse(
                "arn:aws:kinesis:cn-north-1:000000000000:stream/s",
                "StreamARN"
            )
            .is_err()
        );
    }
}
