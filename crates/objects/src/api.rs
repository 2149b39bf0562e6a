//! The S3 API over the store, as the front door mounts it: each operation
//! takes the JSON form of its input (bound by the front door from the
//! path, query, headers and body per the model) and answers the JSON form
//! of its output. GetObject's bytes go out raw (`Reply::Payload`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, Payload, Reply, Request, Spec};

/// Objects up to this size are read whole before the answer; larger ones
/// stream from the file as they are sent.
const SMALL_OBJECT: u64 = 1024 * 1024;
use serde_json::{Map, Value, json};

use crate::error::ObjectsError;
use crate::store::{
    AWS_KMS, Encryption, Entry, ListQuery, MAX_LIST_KEYS, ObjectInfo, Objects, PutOptions,
    RangeSpec, Sse,
};

/// The operations served, in the order the brief ranks them.
pub const OPERATIONS: &[&str] = &[
    "ListBuckets",
    "CreateBucket",
    "DeleteBucket",
    "HeadBucket",
    "GetBucketLocation",
    "ListObjectsV2",
    "ListObjects",
    "GetObject",
    "HeadObject",
    "PutObject",
    "DeleteObject",
    "DeleteObjects",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
];

/// GetBucketLocation's body: the `LocationConstraint` element is the
/// root, empty for us-east-1 (S3's answer for its original region).
fn location_document(region: &str) -> bytes::Bytes {
    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
    let doc = if region == "us-east-1" {
        format!("{HEAD}<LocationConstraint xmlns=\"{NS}\"/>")
    } else {
        // Regions are [a-z0-9-]: nothing to escape.
        format!("{HEAD}<LocationConstraint xmlns=\"{NS}\">{region}</LocationConstraint>")
    };
    bytes::Bytes::from(doc)
}

/// S3 as the front door mounts it.
#[derive(Debug, Clone)]
pub struct S3Api {
    spec: Arc<Spec>,
    store: Objects,
    region: String,
    account: String,
}

impl S3Api {
    /// The API over `store`, for the server's region and account.
    pub fn new(store: Objects, region: impl Into<String>, account: impl Into<String>) -> S3Api {
        S3Api {
            spec: Arc::new(
                Spec::from_model(crate::MODEL, "s3").expect("the vendored model has metadata"),
            ),
            store,
            region: region.into(),
            account: account.into(),
        }
    }

    /// The store the API serves.
    pub fn store(&self) -> &Objects {
        &self.store
    }

    async fn run(&self, mut request: Request<'_>) -> Result<Reply, ObjectsError> {
        let input = std::mem::take(&mut request.input);
        let text = |k: &str| input.get(k).and_then(Value::as_str);
        let bucket = text("Bucket").unwrap_or_default().to_string();
        let key = text("Key").map(String::from);
        // Before acting, S3's own action on what the typed input names.
        let object = |b: &str, k: &str| vec![format!("arn:aws:s3:::{b}/{k}")];
        let this_object = object(&bucket, key.as_deref().unwrap_or_default());
        let this_bucket = vec![format!("arn:aws:s3:::{bucket}")];
        let mut checks: Vec<(&str, Vec<String>)> = Vec::with_capacity(2);
        match iam_action(request.operation) {
            Some(action) => {
                let resources = match request.operation {
                    "ListBuckets" => vec!["*".to_string()],
                    _ if key.is_some() => this_object,
                    _ => this_bucket,
                };
                checks.push((action, resources));
            }
            // Checked per key below, as S3 does.
            None if request.operation == "DeleteObjects" => {}
            // An operation with no action is never run unchecked.
            None => {
                return Err(ObjectsError::InvalidRequest(format!(
                    "Operation {} is not supported by this version of Ripstream.",
                    request.operation
                )));
            }
        }
        if request.operation == "CopyObject"
            && let Some((b, k)) = text("CopySource").and_then(parse_copy_source)
        {
            checks.push(("s3:GetObject", object(&b, &k)));
        }
        for (action, resources) in &checks {
            request
                .authorize
                .authorize_action(action, resources)
                .map_err(ObjectsError::Body)?;
        }
        let key = key.unwrap_or_default();
        let store = &self.store;
        match request.operation {
            "ListBuckets" => {
                let buckets: Vec<Value> = store
                    .list_buckets()?
                    .into_iter()
                    .map(|b| {
                        json!({
                            "Name": b.name,
                            "CreationDate": epoch(b.created),
                            "BucketRegion": self.region,
                        })
                    })
                    .collect();
                ok(json!({"Buckets": buckets, "Owner": self.owner()}))
            }
            "CreateBucket" => {
                store.create_bucket(&bucket)?;
                ok(json!({"Location": format!("/{bucket}")}))
            }
            "DeleteBucket" => {
                store.delete_bucket(&bucket).await?;
                Ok(Reply::Empty)
            }
            "HeadBucket" => {
                if !store.bucket_exists(&bucket) {
                    return Err(ObjectsError::NoSuchBucket { bucket });
                }
                ok(json!({"BucketRegion": self.region}))
            }
            "GetBucketLocation" => {
                if !store.bucket_exists(&bucket) {
                    return Err(ObjectsError::NoSuchBucket { bucket });
                }
                Ok(Reply::Payload {
                    output: b"{}".to_vec(),
                    body: Payload::Document(location_document(&self.region)),
                    status: None,
                })
            }
            "ListObjectsV2" | "ListObjects" => self.list(request.operation, &bucket, &input).await,
            "GetObject" | "HeadObject" => {
                refuse_ssec(&input, SSEC_MEMBERS)?;
                let range = text("Range").and_then(RangeSpec::parse);
                let head = request.operation == "HeadObject";
                // GetObject judges its conditions on the very file it then
                // sends: an overwrite in between cannot slip bytes past an
                // If-Match that saw the old ETag.
                let opened = if head {
                    None
                } else {
                    Some(store.open_object(&bucket, &key).await?)
                };
                let info = match &opened {
                    Some(o) => o.info.clone(),
                    None => store.head(&bucket, &key).await?,
                };
                // Reading an SSE-KMS object is a kms:Decrypt of its key.
                if !head {
                    authorize_kms(&request, "kms:Decrypt", info.encryption.as_ref())?;
                }
                if let Some(status) = preconditions(&input, &info)? {
                    // 304: the object's validators, no body.
                    return Ok(Reply::Payload {
                        output: to_vec(&json!({
                            "ETag": info.etag,
                            "LastModified": epoch(info.last_modified),
                        })),
                        body: Payload::Bytes(bytes::Bytes::new()),
                        status: Some(status),
                    });
                }
                let mut out = object_headers(&info);
                if head {
                    let span = range.map(|r| r.resolve(info.size)).transpose()?;
                    if let Some((a, b)) = span {
                        out.insert("ContentLength".into(), (b - a + 1).into());
                        out.insert(
                            "ContentRange".into(),
                            format!("bytes {a}-{b}/{}", info.size).into(),
                        );
                        return Ok(Reply::Payload {
                            output: to_vec(&Value::Object(out)),
                            body: Payload::Bytes(bytes::Bytes::new()),
                            status: Some(StatusCode::PARTIAL_CONTENT),
                        });
                    }
                    return ok(Value::Object(out));
                }
                let Some(opened) = opened else {
                    return ok(Value::Object(out));
                };
                let (info, len, span, stream) = opened.stream(range).await?;
                let mut out = object_headers(&info);
                let status = span.map(|(a, b)| {
                    out.insert(
                        "ContentRange".into(),
                        format!("bytes {a}-{b}/{}", info.size).into(),
                    );
                    StatusCode::PARTIAL_CONTENT
                });
                out.insert("ContentLength".into(), len.into());
                let body = if len <= SMALL_OBJECT {
                    // Small: read whole here, so a read error is still an
                    // error status rather than a cut connection.
                    let mut stream = stream;
                    let mut buf = Vec::with_capacity(len as usize);
                    while let Some(piece) =
                        std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
                    {
                        buf.extend_from_slice(&piece.map_err(ObjectsError::Body)?);
                    }
                    Payload::Bytes(bytes::Bytes::from(buf))
                } else {
                    Payload::Stream { len, stream }
                };
                Ok(Reply::Payload {
                    output: to_vec(&Value::Object(out)),
                    body,
                    status,
                })
            }
            "PutObject" => {
                let opts = put_options(&input)?;
                let enc = opts
                    .sse
                    .as_ref()
                    .map(|s| store.resolve_sse(s))
                    .transpose()?;
                authorize_kms(&request, "kms:GenerateDataKey", enc.as_ref())?;
                let info = match request.body.take() {
                    Some(body) => store.put_stream(&bucket, &key, body, opts).await?,
                    None => {
                        let bytes = blob(&input, "Body")?;
                        store.put_with(&bucket, &key, bytes, opts).await?
                    }
                };
                let mut out = json!({"ETag": info.etag});
                sse_headers(&mut out, info.encryption.as_ref());
                ok(out)
            }
            "DeleteObject" => {
                store.delete(&bucket, &key).await?;
                Ok(Reply::Empty)
            }
            "DeleteObjects" => {
                if !store.bucket_exists(&bucket) {
                    return Err(ObjectsError::NoSuchBucket { bucket });
                }
                let delete = input.get("Delete").cloned().unwrap_or_default();
                let quiet = delete
                    .get("Quiet")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let mut deleted = Vec::new();
                let mut errors = Vec::new();
                let objects = delete
                    .get("Objects")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if objects.len() > 1000 {
                    return Err(ObjectsError::MalformedXml);
                }
                for o in objects {
                    let Some(k) = o.get("Key").and_then(Value::as_str) else {
                        continue;
                    };
                    let arn = format!("arn:aws:s3:::{bucket}/{k}");
                    let result = match request
                        .authorize
                        .authorize_action("s3:DeleteObject", &[arn])
                    {
                        Ok(()) => store.delete(&bucket, k).await,
                        Err(e) => Err(ObjectsError::Body(e)),
                    };
                    match result {
                        Ok(()) if !quiet => deleted.push(json!({"Key": k})),
                        Ok(()) => {}
                        Err(e) => {
                            // The front door's refusal in S3's own words,
                            // as the REST codec renders it at the top level.
                            let code = match ripstream_api::ServiceError::code(&e) {
                                "AccessDeniedException" => "AccessDenied",
                                code => code,
                            };
                            errors.push(json!({"Key": k, "Code": code, "Message": e.to_string()}))
                        }
                    }
                }
                ok(json!({"Deleted": deleted, "Errors": errors}))
            }
            "CopyObject" => {
                refuse_ssec(&input, COPY_SOURCE_SSEC_MEMBERS)?;
                let (src_bucket, src_key) = text("CopySource")
                    .and_then(parse_copy_source)
                    .ok_or_else(|| {
                        ObjectsError::InvalidArgument(
                            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"
                                .into(),
                        )
                    })?;
                let replace = text("MetadataDirective") == Some("REPLACE");
                let sse = sse_of(&input)?;
                if src_bucket == bucket && src_key == key && !replace && sse.is_none() {
                    return Err(ObjectsError::InvalidRequest(
                        "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
                    ));
                }
                let source = store.head(&src_bucket, &src_key).await?;
                copy_preconditions(&input, &source)?;
                authorize_kms(&request, "kms:Decrypt", source.encryption.as_ref())?;
                let enc = sse.as_ref().map(|s| store.resolve_sse(s)).transpose()?;
                authorize_kms(&request, "kms:GenerateDataKey", enc.as_ref())?;
                let opts = replace.then(|| put_options(&input)).transpose()?;
                let info = store
                    .copy_judged(
                        (&src_bucket, &src_key),
                        (&bucket, &key),
                        opts,
                        sse,
                        Some(source.encryption.clone()),
                    )
                    .await?;
                let mut out = json!({"CopyObjectResult": {
                    "ETag": info.etag,
                    "LastModified": epoch(info.last_modified),
                }});
                sse_headers(&mut out, info.encryption.as_ref());
                ok(out)
            }
            "CreateMultipartUpload" => {
                let opts = put_options(&input)?;
                let enc = opts
                    .sse
                    .as_ref()
                    .map(|s| store.resolve_sse(s))
                    .transpose()?;
                // S3 asks both of a multipart SSE-KMS upload: data keys for
                // its parts, and decrypting them to join them.
                authorize_kms(&request, "kms:GenerateDataKey", enc.as_ref())?;
                authorize_kms(&request, "kms:Decrypt", enc.as_ref())?;
                let id = store.create_upload(&bucket, &key, opts).await?;
                let mut out = json!({"Bucket": bucket, "Key": key, "UploadId": id});
                sse_headers(&mut out, enc.as_ref());
                ok(out)
            }
            "UploadPart" => {
                refuse_ssec(&input, SSEC_MEMBERS)?;
                let upload_id = text("UploadId").unwrap_or_default();
                let number = input
                    .get("PartNumber")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                let md5 = content_md5(&input)?;
                // S3: a part of an SSE-KMS upload is sealed under a data
                // key of its key, and the upload's parts are decrypted to
                // join them; whoever adds a part needs both.
                let enc = store.upload_encryption(&bucket, &key, upload_id)?;
                authorize_kms(&request, "kms:GenerateDataKey", enc.as_ref())?;
                authorize_kms(&request, "kms:Decrypt", enc.as_ref())?;
                let body = match request.body.take() {
                    Some(b) => b,
                    None => {
                        let bytes = blob(&input, "Body")?;
                        let once: ripstream_api::BodyStream = Box::pin(Once(Some(Ok(bytes))));
                        once
                    }
                };
                let etag = store
                    .upload_part(&bucket, &key, upload_id, number, body, md5)
                    .await?;
                ok(json!({"ETag": etag}))
            }
            "CompleteMultipartUpload" => {
                let upload_id = text("UploadId").unwrap_or_default();
                let parts: Vec<(u32, String)> = input
                    .pointer("/MultipartUpload/Parts")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                (
                                    p.get("PartNumber")
                                        .and_then(Value::as_u64)
                                        .and_then(|n| u32::try_from(n).ok())
                                        .unwrap_or(0),
                                    p.get("ETag")
                                        .and_then(Value::as_str)
                                        .unwrap_or_default()
                                        .to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                // Completing opens every part and seals the object anew.
                let enc = store.upload_encryption(&bucket, &key, upload_id)?;
                authorize_kms(&request, "kms:GenerateDataKey", enc.as_ref())?;
                authorize_kms(&request, "kms:Decrypt", enc.as_ref())?;
                let info = store
                    .complete_upload(&bucket, &key, upload_id, &parts)
                    .await?;
                let mut out = json!({
                    "Location": format!("/{bucket}/{key}"),
                    "Bucket": bucket,
                    "Key": key,
                    "ETag": info.etag,
                });
                sse_headers(&mut out, info.encryption.as_ref());
                ok(out)
            }
            "AbortMultipartUpload" => {
                let upload_id = text("UploadId").unwrap_or_default();
                store.abort_upload(&bucket, &key, upload_id).await?;
                Ok(Reply::Empty)
            }
            "ListMultipartUploads" => self.list_uploads(&bucket, &input).await,
            "ListParts" => {
                let upload_id = text("UploadId").unwrap_or_default().to_string();
                let marker = input
                    .get("PartNumberMarker")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let max = input
                    .get("MaxParts")
                    .and_then(Value::as_u64)
                    .map_or(1000, |m| m.min(1000)) as usize;
                let all = store.list_parts(&bucket, &key, &upload_id).await?;
                let after: Vec<_> = all
                    .into_iter()
                    .filter(|p| u64::from(p.number) > marker)
                    .collect();
                let truncated = after.len() > max;
                let page: Vec<_> = after.into_iter().take(max).collect();
                let next = page.last().map(|p| p.number);
                let parts: Vec<Value> = page
                    .iter()
                    .map(|p| {
                        json!({
                            "PartNumber": p.number,
                            "LastModified": epoch(p.last_modified),
                            "ETag": p.etag,
                            "Size": p.size,
                        })
                    })
                    .collect();
                let mut out = json!({
                    "Bucket": bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "PartNumberMarker": marker,
                    "MaxParts": max,
                    "IsTruncated": truncated,
                    "Parts": parts,
                    "Initiator": self.owner(),
                    "Owner": self.owner(),
                    "StorageClass": "STANDARD",
                });
                if let Some(n) = next {
                    out["NextPartNumberMarker"] = n.into();
                }
                ok(out)
            }
            other => Err(ObjectsError::InvalidRequest(format!(
                "Operation {other} is not supported by this version of Ripstream."
            ))),
        }
    }

    fn owner(&self) -> Value {
        json!({"ID": canonical_id(&self.account), "DisplayName": self.account})
    }

    /// ListMultipartUploads: the uploads after (`KeyMarker`,
    /// `UploadIdMarker`) in S3's order, `Prefix` and `Delimiter` applied as
    /// ListObjects applies them (a rolled-up prefix counts once toward
    /// `MaxUploads`).
    async fn list_uploads(&self, bucket: &str, input: &Value) -> Result<Reply, ObjectsError> {
        let text = |k: &str| input.get(k).and_then(Value::as_str);
        let prefix = text("Prefix").unwrap_or_default();
        let delimiter = text("Delimiter").filter(|d| !d.is_empty());
        let url = match text("EncodingType") {
            None => false,
            Some("url") => true,
            Some(_) => {
                return Err(ObjectsError::InvalidArgument(
                    "Invalid Encoding Method specified in Request".into(),
                ));
            }
        };
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let max = match input.get("MaxUploads").and_then(Value::as_i64) {
            Some(n) if n < 0 => {
                return Err(ObjectsError::InvalidArgument(
                    "Argument max-uploads must be an integer between 0 and 2147483647".into(),
                ));
            }
            Some(n) => usize::try_from(n).unwrap_or(1000).min(1000),
            None => 1000,
        };
        let key_marker = text("KeyMarker").unwrap_or_default();
        // An upload-id marker counts only beside a key marker, as in S3.
        let id_marker = text("UploadIdMarker").filter(|_| !key_marker.is_empty());
        let all = self.store.list_uploads(bucket).await?;
        // Keys after the key marker; of the marker's key, the uploads after
        // the upload-id marker's in the listing's order (initiation time),
        // or, if that upload is gone, those whose id sorts after it (S3's
        // documented rule), so pages never repeat an upload. A key marker
        // that is a rolled-up prefix (it ends with the delimiter) skips the
        // keys under it, which its page already counted.
        let rolled_marker = delimiter.is_some_and(|d| key_marker.ends_with(d));
        let marker_at = id_marker.and_then(|id| {
            all.iter()
                .position(|u| u.key == key_marker && u.upload_id == id)
        });
        let mut after_marker: Vec<_> = all
            .into_iter()
            .enumerate()
            .filter(|(at, u)| {
                if key_marker.is_empty() {
                    return true;
                }
                if rolled_marker && u.key.starts_with(key_marker) {
                    return false;
                }
                match (id_marker, marker_at) {
                    (Some(_), Some(m)) if u.key == key_marker => *at > m,
                    (Some(id), None) if u.key == key_marker => u.upload_id.as_str() > id,
                    _ => u.key.as_str() > key_marker,
                }
            })
            .map(|(_, u)| u)
            .collect();
        after_marker.retain(|u| u.key.starts_with(prefix));
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut last: Option<(String, String)> = None;
        let mut truncated = false;
        for u in after_marker {
            let rolled = delimiter.and_then(|d| {
                u.key[prefix.len()..]
                    .find(d)
                    .map(|at| u.key[..prefix.len() + at + d.len()].to_string())
            });
            if let Some(p) = &rolled
                && prefixes.last() == Some(p)
            {
                continue;
            }
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            match rolled {
                Some(p) => {
                    last = Some((p.clone(), String::new()));
                    prefixes.push(p);
                }
                None => {
                    last = Some((u.key.clone(), u.upload_id.clone()));
                    uploads.push(json!({
                        "UploadId": u.upload_id,
                        "Key": enc(&u.key),
                        "Initiated": u.initiated_ms as f64 / 1000.0,
                        "StorageClass": "STANDARD",
                        "Owner": self.owner(),
                        "Initiator": self.owner(),
                    }));
                }
            }
        }
        let mut out = json!({
            "Bucket": bucket,
            "KeyMarker": enc(key_marker),
            "UploadIdMarker": id_marker.unwrap_or_default(),
            "MaxUploads": max,
            "IsTruncated": truncated,
            "Uploads": uploads,
            "CommonPrefixes": prefixes.iter().map(|p| json!({"Prefix": enc(p)})).collect::<Vec<_>>(),
        });
        if !prefix.is_empty() {
            out["Prefix"] = enc(prefix).into();
        }
        if let Some(d) = delimiter {
            out["Delimiter"] = enc(d).into();
        }
        if url {
            out["EncodingType"] = "url".into();
        }
        if truncated && let Some((key, id)) = last {
            out["NextKeyMarker"] = enc(&key).into();
            out["NextUploadIdMarker"] = id.into();
        }
        ok(out)
    }

    async fn list(&self, op: &str, bucket: &str, input: &Value) -> Result<Reply, ObjectsError> {
        let text = |k: &str| input.get(k).and_then(Value::as_str);
        let v2 = op == "ListObjectsV2";
        let prefix = text("Prefix").unwrap_or_default();
        let delimiter = text("Delimiter").filter(|d| !d.is_empty());
        let url = text("EncodingType") == Some("url");
        if let Some(e) = text("EncodingType")
            && e != "url"
        {
            return Err(ObjectsError::InvalidArgument(
                "Invalid Encoding Method specified in Request".into(),
            ));
        }
        let max_keys = match input.get("MaxKeys").and_then(Value::as_i64) {
            Some(n) if n < 0 => {
                return Err(ObjectsError::InvalidArgument(
                    "Provided max-keys not an integer or within integer range".into(),
                ));
            }
            Some(n) => usize::try_from(n)
                .unwrap_or(MAX_LIST_KEYS)
                .min(MAX_LIST_KEYS),
            None => MAX_LIST_KEYS,
        };
        let token = text("ContinuationToken");
        let after: Option<String> = if v2 {
            match token {
                Some(t) => Some(decode_token(t)?),
                None => text("StartAfter").map(String::from),
            }
        } else {
            text("Marker").map(String::from)
        };
        let listing = self
            .store
            .list(
                bucket,
                ListQuery {
                    prefix,
                    delimiter,
                    after: after.as_deref().filter(|a| !a.is_empty()),
                    max_keys,
                },
            )
            .await?;
        let enc = |s: &str| {
            if url { url_encode(s) } else { s.to_string() }
        };
        let mut contents = Vec::new();
        let mut prefixes = Vec::new();
        for e in &listing.entries {
            match e {
                Entry::Object(o) => contents.push(json!({
                    "Key": enc(&o.key),
                    "LastModified": epoch(o.last_modified),
                    "ETag": o.etag,
                    "Size": o.size,
                    "StorageClass": "STANDARD",
                })),
                Entry::Prefix(p) => prefixes.push(json!({"Prefix": enc(p)})),
            }
        }
        let mut out = Map::new();
        out.insert("Name".into(), bucket.into());
        out.insert("Prefix".into(), enc(prefix).into());
        if let Some(d) = delimiter {
            out.insert("Delimiter".into(), enc(d).into());
        }
        out.insert("MaxKeys".into(), max_keys.into());
        out.insert("IsTruncated".into(), listing.truncated.into());
        if url {
            out.insert("EncodingType".into(), "url".into());
        }
        if v2 {
            out.insert("KeyCount".into(), listing.entries.len().into());
            if let Some(t) = token {
                out.insert("ContinuationToken".into(), t.into());
            }
            if let Some(s) = text("StartAfter") {
                out.insert("StartAfter".into(), enc(s).into());
            }
            if listing.truncated
                && let Some(last) = listing.last()
            {
                out.insert("NextContinuationToken".into(), encode_token(last).into());
            }
        } else {
            out.insert(
                "Marker".into(),
                enc(text("Marker").unwrap_or_default()).into(),
            );
            // S3 sends NextMarker only with a delimiter; clients take the
            // last key otherwise.
            if listing.truncated
                && delimiter.is_some()
                && let Some(last) = listing.last()
            {
                out.insert("NextMarker".into(), enc(last).into());
            }
        }
        out.insert("Contents".into(), Value::Array(contents));
        out.insert("CommonPrefixes".into(), Value::Array(prefixes));
        ok(Value::Object(out))
    }
}

impl ripstream_api::Service for S3Api {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The store's expiry of incomplete multipart uploads.
    fn start(&self) -> Vec<ripstream_api::Task> {
        vec![Box::pin(self.store.background())]
    }

    /// `/health` is the bucket `health`'s once it exists.
    fn claims_path(&self, path: &str) -> bool {
        path.strip_prefix('/')
            .is_some_and(|bucket| !bucket.contains('/') && self.store.bucket_exists(bucket))
    }

    fn supports(&self, operation: &str) -> bool {
        OPERATIONS.contains(&operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            let operation = request.operation;
            self.run(request).await.map_err(|e| match e {
                // A refusal or a body failure is already the client's error.
                ObjectsError::Body(inner) => inner,
                e => {
                    if matches!(
                        e,
                        ObjectsError::Io(_)
                            | ObjectsError::Store(_)
                            | ObjectsError::Task(_)
                            | ObjectsError::Keyring(_)
                            | ObjectsError::Sealed(_)
                    ) {
                        tracing::error!(
                            operation,
                            error = %ripstream_api::Chain(&e),
                            "object store failure"
                        );
                    }
                    BoxError::from(e)
                }
            })
        })
    }
}

/// A body already in memory, as a one-piece stream.
struct Once(Option<Result<bytes::Bytes, BoxError>>);

impl futures_core::Stream for Once {
    type Item = Result<bytes::Bytes, BoxError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take())
    }
}

fn ok(v: Value) -> Result<Reply, ObjectsError> {
    Ok(Reply::Json(to_vec(&v)))
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A timestamp in the JSON form: epoch seconds, milliseconds kept.
fn epoch(t: SystemTime) -> Value {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    json!(ms as f64 / 1000.0)
}

fn object_headers(info: &ObjectInfo) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("AcceptRanges".into(), "bytes".into());
    out.insert("ETag".into(), info.etag.clone().into());
    // HTTP dates have whole seconds.
    let secs = info
        .last_modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.insert("LastModified".into(), secs.into());
    out.insert("ContentLength".into(), info.size.into());
    out.insert("ContentType".into(), info.content_type.clone().into());
    if let Some(e) = &info.encryption {
        out.insert("ServerSideEncryption".into(), e.algorithm.clone().into());
        if let Some(arn) = &e.key_arn {
            out.insert("SSEKMSKeyId".into(), arn.clone().into());
        }
    }
    if !info.metadata.is_empty() {
        let m: Map<String, Value> = info
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out.insert("Metadata".into(), Value::Object(m));
    }
    out
}

/// GetObject's and HeadObject's conditions, in the order S3 applies them:
/// If-Match then If-Unmodified-Since (412), If-None-Match then
/// If-Modified-Since (304).
fn preconditions(input: &Value, info: &ObjectInfo) -> Result<Option<StatusCode>, ObjectsError> {
    let text = |k: &str| input.get(k).and_then(Value::as_str);
    let time = |k: &str| input.get(k).and_then(Value::as_f64);
    let modified = info
        .last_modified
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64);
    let if_match = text("IfMatch");
    if let Some(m) = if_match
        && !etag_matches(m, &info.etag)
    {
        return Err(ObjectsError::PreconditionFailed {
            condition: "If-Match",
        });
    }
    if if_match.is_none()
        && let Some(t) = time("IfUnmodifiedSince")
        && modified > t
    {
        return Err(ObjectsError::PreconditionFailed {
            condition: "If-Unmodified-Since",
        });
    }
    let if_none = text("IfNoneMatch");
    if let Some(m) = if_none
        && etag_matches(m, &info.etag)
    {
        return Ok(Some(StatusCode::NOT_MODIFIED));
    }
    if if_none.is_none()
        && let Some(t) = time("IfModifiedSince")
        && modified <= t
    {
        return Ok(Some(StatusCode::NOT_MODIFIED));
    }
    Ok(None)
}

/// CopyObject's conditions on its source (all 412).
fn copy_preconditions(input: &Value, info: &ObjectInfo) -> Result<(), ObjectsError> {
    let text = |k: &str| input.get(k).and_then(Value::as_str);
    if let Some(m) = text("CopySourceIfMatch")
        && !etag_matches(m, &info.etag)
    {
        return Err(ObjectsError::PreconditionFailed {
            condition: "x-amz-copy-source-If-Match",
        });
    }
    if let Some(m) = text("CopySourceIfNoneMatch")
        && etag_matches(m, &info.etag)
    {
        return Err(ObjectsError::PreconditionFailed {
            condition: "x-amz-copy-source-If-None-Match",
        });
    }
    Ok(())
}

/// Whether an If-Match/If-None-Match list names the ETag (`*` names any).
fn etag_matches(header: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == bare)
}

fn content_md5(input: &Value) -> Result<Option<[u8; 16]>, ObjectsError> {
    let Some(text) = input.get("ContentMD5").and_then(Value::as_str) else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or(ObjectsError::InvalidDigest)
}

fn put_options(input: &Value) -> Result<PutOptions, ObjectsError> {
    let metadata: BTreeMap<String, String> = input
        .get("Metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(PutOptions {
        sse: sse_of(input)?,
        content_type: input
            .get("ContentType")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(String::from),
        metadata,
        content_md5: content_md5(input)?,
    })
}

/// The server-side encryption a write's headers ask for, checked as S3
/// checks them. SSE-C, encryption contexts and DSSE-KMS are refused, never
/// ignored: an object must not be stored less protected than asked.
/// `x-amz-server-side-encryption-bucket-key-enabled` changes only how S3
/// bills KMS calls, so it is accepted and has no effect.
/// SSE-C's request members (`x-amz-server-side-encryption-customer-*`).
const SSEC_MEMBERS: &[&str] = &[
    "SSECustomerAlgorithm",
    "SSECustomerKey",
    "SSECustomerKeyMD5",
];

/// CopyObject's SSE-C members for its source.
const COPY_SOURCE_SSEC_MEMBERS: &[&str] = &[
    "CopySourceSSECustomerAlgorithm",
    "CopySourceSSECustomerKey",
    "CopySourceSSECustomerKeyMD5",
];

/// Reads, parts and copy sources with SSE-C keys: no object here is
/// SSE-C, so S3's answer for an object not so encrypted (never ignored).
fn refuse_ssec(input: &Value, members: &[&str]) -> Result<(), ObjectsError> {
    if members.iter().any(|k| input.get(*k).is_some()) {
        return Err(ObjectsError::InvalidRequest(
            "The encryption parameters are not applicable to this object.".into(),
        ));
    }
    Ok(())
}

fn sse_of(input: &Value) -> Result<Option<Sse>, ObjectsError> {
    let text = |k: &str| input.get(k).and_then(Value::as_str);
    if SSEC_MEMBERS.iter().any(|k| input.get(*k).is_some()) {
        return Err(ObjectsError::NotImplemented(
            "server-side encryption with customer-provided keys (SSE-C)".into(),
        ));
    }
    if input.get("SSEKMSEncryptionContext").is_some() {
        return Err(ObjectsError::NotImplemented(
            "x-amz-server-side-encryption-context".into(),
        ));
    }
    let key_id = text("SSEKMSKeyId");
    match text("ServerSideEncryption") {
        None if key_id.is_some() => Err(ObjectsError::InvalidArgument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms".into(),
        )),
        None => Ok(None),
        Some("AES256") if key_id.is_some() => Err(ObjectsError::InvalidArgument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms".into(),
        )),
        Some("AES256") => Ok(Some(Sse::S3)),
        Some(AWS_KMS) => match key_id {
            Some("") => Err(ObjectsError::InvalidArgument(
                "KMS key ID must not be empty.".into(),
            )),
            k => Ok(Some(Sse::Kms(k.map(String::from)))),
        },
        Some(m @ ("aws:kms:dsse" | "aws:fsx" | "aws:backup")) => Err(
            ObjectsError::NotImplemented(format!("x-amz-server-side-encryption: {m}")),
        ),
        Some(_) => Err(ObjectsError::InvalidArgument(
            "The encryption method specified is not supported".into(),
        )),
    }
}

/// S3's encryption response headers for an object so encrypted.
fn sse_headers(out: &mut Value, encryption: Option<&Encryption>) {
    let Some(e) = encryption else { return };
    out["ServerSideEncryption"] = e.algorithm.clone().into();
    if let Some(arn) = &e.key_arn {
        out["SSEKMSKeyId"] = arn.clone().into();
    }
}

/// The KMS permission S3 needs of the caller to use an SSE-KMS object's
/// key (none for SSE-S3, whose key is the server's own), checked as IAM
/// checks it on the key's ARN.
fn authorize_kms(
    request: &Request<'_>,
    action: &str,
    encryption: Option<&Encryption>,
) -> Result<(), ObjectsError> {
    let Some(arn) = encryption.and_then(|e| e.key_arn.as_ref()) else {
        return Ok(());
    };
    request
        .authorize
        .authorize_action(action, std::slice::from_ref(arn))
        .map_err(ObjectsError::Body)
}

/// A blob member of the input (base64 in the JSON form).
fn blob(input: &Value, name: &str) -> Result<bytes::Bytes, ObjectsError> {
    match input.get(name).and_then(Value::as_str) {
        None => Ok(bytes::Bytes::new()),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(bytes::Bytes::from)
            .map_err(|_| ObjectsError::InvalidArgument("The body is not valid.".into())),
    }
}

/// `x-amz-copy-source`: `bucket/key` or `/bucket/key`, URL-encoded, maybe
/// with `?versionId=` (ignored: the store keeps no versions).
/// The IAM action S3 checks for an operation: S3's actions are not its
/// operations' names. DeleteObjects has none of its own (it checks
/// `s3:DeleteObject` for each key); CopyObject also checks `s3:GetObject`
/// on its source.
fn iam_action(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "ListBuckets" => "s3:ListAllMyBuckets",
        "CreateBucket" => "s3:CreateBucket",
        "DeleteBucket" => "s3:DeleteBucket",
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => "s3:ListBucket",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "GetObject" | "HeadObject" => "s3:GetObject",
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" => "s3:DeleteObject",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListParts" => "s3:ListMultipartUploadParts",
        "GetBucketLocation" => "s3:GetBucketLocation",
        _ => return None,
    })
}

fn parse_copy_source(text: &str) -> Option<(String, String)> {
    let text = text.split_once('?').map_or(text, |(p, _)| p);
    let decoded = url_decode(text.trim_start_matches('/'))?;
    let (bucket, key) = decoded.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// S3's `encoding-type=url`: everything but unreserved characters and `/`
/// percent-encoded (as S3 encodes keys in listings).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A continuation token: the key (or common prefix) the next page starts
/// after, opaque to clients as S3's are.
fn encode_token(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after.as_bytes())
}

fn decode_token(token: &str) -> Result<String, ObjectsError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            ObjectsError::InvalidArgument("The continuation token provided is incorrect".into())
        })
}

/// The account's canonical user id, as S3 shows owners: 64 hex digits,
/// derived from the account so it is the same on every start.
fn canonical_id(account: &str) -> String {
    use md5::Digest;
    let a = md5::Md5::digest(format!("ripstream:{account}").as_bytes());
    let b = md5::Md5::digest(format!("owner:{account}").as_bytes());
    format!("{}{}", hex::encode(a), hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_and_url_encoding() {
        assert_eq!(
            parse_copy_source("/src/a%20b/c.txt?versionId=x"),
            Some(("src".into(), "a b/c.txt".into()))
        );
        assert_eq!(parse_copy_source("src"), None);
        assert_eq!(url_encode("a b/ü+"), "a%20b/%C3%BC%2B");
        assert_eq!(decode_token(&encode_token("k/é")).unwrap(), "k/é");
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn etag_conditions() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("abc", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
