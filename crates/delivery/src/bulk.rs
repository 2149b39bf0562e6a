//! The OpenSearch / Elasticsearch `_bulk` API: one `index` action per
//! document, the answer read item by item, so a batch can succeed in
//! part. Items refused with 429 or a 5xx are worth sending again; other
//! refusals (a mapping conflict, a malformed document) never succeed.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::{Client, DeliveryError, Url, snippet};

/// A bulk answer for a large batch lists every item: allow it room.
const MAX_BULK_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster's base URL (`https://search-domain:443`).
    pub url: Url,
    pub timeout: Duration,
}

/// One document of a batch.
#[derive(Debug, Clone)]
pub struct Doc<'a> {
    pub index: &'a str,
    /// The mapping type (`_type`), for clusters older than 7.x.
    pub type_name: Option<&'a str>,
    /// `None`: the cluster generates the id.
    pub id: Option<&'a str>,
    pub source: &'a [u8],
}

/// What became of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Indexed,
    /// Worth sending again (429, 5xx).
    Retry {
        status: u16,
        error: String,
    },
    /// Refused for good.
    Failed {
        status: u16,
        error: String,
    },
}

/// The NDJSON body: an action line and the document, per document.
pub fn bulk_body(docs: &[Doc<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in docs {
        let mut meta = Map::new();
        meta.insert("_index".into(), json!(d.index));
        if let Some(t) = d.type_name {
            meta.insert("_type".into(), json!(t));
        }
        if let Some(id) = d.id {
            meta.insert("_id".into(), json!(id));
        }
        out.extend(serde_json::to_vec(&json!({ "index": meta })).unwrap_or_default());
        out.push(b'\n');
        // A document spanning lines would break NDJSON framing: the
        // cluster sees the rest as the next action.
        out.extend(d.source.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        out.push(b'\n');
    }
    out
}

/// Reads a `_bulk` answer for `n` documents.
pub fn parse_items(body: &[u8], n: usize) -> Result<Vec<Item>, DeliveryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        DeliveryError::InvalidResponse(format!("not a _bulk answer: {}", snippet(body)))
    })?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| DeliveryError::InvalidResponse("the _bulk answer has no items".into()))?;
    if items.len() != n {
        return Err(DeliveryError::InvalidResponse(format!(
            "the _bulk answer has {} items for {n} documents",
            items.len()
        )));
    }
    Ok(items
        .iter()
        .map(|it| {
            let r = it
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = r.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
            let error = r.get("error").map(|e| e.to_string());
            match (status, error) {
                (200..=299, None) => Item::Indexed,
                (s, e) => {
                    let error = e.unwrap_or_else(|| format!("status {s}"));
                    if s == 429 || s >= 500 {
                        Item::Retry { status: s, error }
                    } else {
                        Item::Failed { status: s, error }
                    }
                }
            }
        })
        .collect())
}

/// The index a document goes to: IndexName with the UTC arrival time's
/// rotation suffix, as Firehose appends it.
pub fn rotated_index(name: &str, rotation: Rotation, arrival_ms: i64) -> String {
    use chrono_free::civil;
    let (y, m, d, h, wy, w) = civil(arrival_ms);
    match rotation {
        Rotation::NoRotation => name.to_string(),
        Rotation::OneHour => format!("{name}-{y:04}-{m:02}-{d:02}-{h:02}"),
        Rotation::OneDay => format!("{name}-{y:04}-{m:02}-{d:02}"),
        Rotation::OneWeek => format!("{name}-{wy:04}-w{w:02}"),
        Rotation::OneMonth => format!("{name}-{y:04}-{m:02}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    NoRotation,
    OneHour,
    OneDay,
    OneWeek,
    OneMonth,
}

impl Rotation {
    pub fn parse(s: &str) -> Option<Rotation> {
        Some(match s {
            "NoRotation" => Rotation::NoRotation,
            "OneHour" => Rotation::OneHour,
            "OneDay" => Rotation::OneDay,
            "OneWeek" => Rotation::OneWeek,
            "OneMonth" => Rotation::OneMonth,
            _ => return None,
        })
    }
}

/// Calendar arithmetic for index names, without a date crate.
mod chrono_free {
    /// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
    fn ymd(days: i64) -> (i64, u32, u32) {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    fn days_from(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
        let doy = (153 * mp + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// (year, month, day, hour, week-year, week) of a UTC instant. Weeks
    /// follow the US convention Firehose documents for OneWeek: a week
    /// starts on Sunday, and week 1 is the week holding January 1st (the
    /// first week with a Saturday in the year), so the last days of
    /// December can belong to week 1 of the next year.
    pub fn civil(ms: i64) -> (i64, u32, u32, u32, i64, u32) {
        let days = ms.div_euclid(86_400_000);
        let hour = (ms.rem_euclid(86_400_000) / 3_600_000) as u32;
        let (y, m, d) = ymd(days);
        // 1970-01-01 was a Thursday: weekday 0 = Sunday.
        let weekday = |days: i64| (days + 4).rem_euclid(7);
        let week_start = days - weekday(days);
        // The Saturday ending this week decides its year.
        let (wy, _, _) = ymd(week_start + 6);
        let jan1 = days_from(wy, 1, 1);
        let first_start = jan1 - weekday(jan1);
        let week = ((week_start - first_start) / 7 + 1) as u32;
        (y, m, d, hour, wy, week)
    }
}

/// Document ids derived from where a record is, so a redelivered record
/// overwrites itself instead of indexing twice.
pub fn document_id(stream_tag: &str, position: u64, subsequence: u32) -> String {
    format!("{stream_tag}-{position}.{subsequence}")
}

impl Client {
    /// One `_bulk` request. `Err`: the request as a whole failed (every
    /// document is retried); `Ok`: what became of each document.
    pub async fn send_bulk(
        &self,
        cluster: &Cluster,
        docs: &[Doc<'_>],
    ) -> Result<Vec<Item>, DeliveryError> {
        let mut url = cluster.url.clone();
        let p = format!("{}/_bulk", cluster.url.path().trim_end_matches('/'));
        url.set_path(&p);
        let req = self
            .http
            .post(url)
            .header("Content-Type", "application/x-ndjson")
            .body(bulk_body(docs));
        let (status, body) = self
            .exchange(req, cluster.timeout, MAX_BULK_RESPONSE_BYTES)
            .await?;
        if status != 200 {
            return Err(DeliveryError::Status {
                status,
                body: snippet(&body),
            });
        }
        parse_items(&body, docs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Reply, serve};
    use std::sync::Arc;

    fn ms(y: i64, m: u32, d: u32, h: u32) -> i64 {
        chrono_free_days(y, m, d) * 86_400_000 + h as i64 * 3_600_000
    }

    fn chrono_free_days(y: i64, m: u32, d: u32) -> i64 {
        // Days from the epoch by counting, independent of the code tested.
        let mut days = 0i64;
        for yy in 1970..y {
            days += if (yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0 {
                366
            } else {
                365
            };
        }
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let lens = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        for l in &lens[..(m - 1) as usize] {
            days += *l as i64;
        }
        days + d as i64 - 1
    }

    #[test]
    fn index_names_rotate_as_firehose_documents() {
        let t = ms(2016, 2, 25, 13);
        assert_eq!(rotated_index("myindex", Rotation::NoRotation, t), "myindex");
        assert_eq!(
            rotated_index("myindex", Rotation::OneHour, t),
            "myindex-2016-02-25-13"
        );
        assert_eq!(
            rotated_index("myindex", Rotation::OneDay, t),
            "myindex-2016-02-25"
        );
        assert_eq!(
            rotated_index("myindex", Rotation::OneMonth, t),
            "myindex-2016-02"
        );
        // US weeks: 2016-01-01 (a Friday) is in week 1, which began on
        // Sunday 2015-12-27; 2016-02-25 is then in week 9.
        assert_eq!(rotated_index("i", Rotation::OneWeek, t), "i-2016-w09");
        assert_eq!(
            rotated_index("i", Rotation::OneWeek, ms(2015, 12, 27, 0)),
            "i-2016-w01"
        );
        assert_eq!(
            rotated_index("i", Rotation::OneWeek, ms(2015, 12, 26, 23)),
            "i-2015-w52"
        );
        assert_eq!(
            rotated_index("i", Rotation::OneWeek, ms(2020, 8, 12, 0)),
            "i-2020-w33"
        );
        assert_eq!(Rotation::parse("OneWeek"), Some(Rotation::OneWeek));
        assert_eq!(Rotation::parse("TwoWeeks"), None);
    }

    #[test]
    fn bodies_are_ndjson() {
        let body = bulk_body(&[
            Doc {
                index: "i",
                type_name: Some("_doc"),
                id: Some("a.0"),
                source: b"{\"x\":\n1}",
            },
            Doc {
                index: "i",
                type_name: None,
                id: None,
                source: b"{}",
            },
        ]);
        let lines: Vec<&str> = std::str::from_utf8(&body).unwrap().lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            serde_json::from_str::<Value>(lines[0]).unwrap(),
            json!({"index": {"_index": "i", "_type": "_doc", "_id": "a.0"}})
        );
        assert_eq!(lines[1], "{\"x\": 1}");
        assert_eq!(
            serde_json::from_str::<Value>(lines[2]).unwrap(),
            json!({"index": {"_index": "i"}})
        );
    }

    #[tokio::test]
    async fn items_fail_one_by_one() {
        let rx = serve(Arc::new(|_, _| {
            Reply::Json(
                200,
                json!({"took": 1, "errors": true, "items": [
                    {"index": {"_index": "i", "_id": "1", "status": 201}},
                    {"index": {"_index": "i", "_id": "2", "status": 429, "error": {"type": "es_rejected_execution_exception"}}},
                    {"index": {"_index": "i", "_id": "3", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}}
                ]})
                .to_string(),
            )
        }))
        .await;
        let c = Client::new().unwrap();
        let cluster = Cluster {
            url: Url::parse(&rx.url).unwrap(),
            timeout: Duration::from_secs(5),
        };
        let doc = |id| Doc {
            index: "i",
            type_name: None,
            id: Some(id),
            source: b"{}",
        };
        let items = c
            .send_bulk(&cluster, &[doc("1"), doc("2"), doc("3")])
            .await
            .unwrap();
        assert_eq!(items[0], Item::Indexed);
        assert!(matches!(items[1], Item::Retry { status: 429, .. }));
        assert!(
            matches!(&items[2], Item::Failed { status: 400, error } if error.contains("mapper_parsing_exception"))
        );
        assert_eq!(rx.got.lock().unwrap()[0].path, "/_bulk");
    }
}
