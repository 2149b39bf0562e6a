use std::collections::VecDeque;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use http_body_util::BodyExt;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::auth::sigv4::{self, RequestParts, SecretLookup};

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20130524T000000Z";
/// The seed signature AWS publishes for its chunked PUT example.
const DOC_SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const DOC_CHUNK_SIGS: [&str; 3] = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
];
/// The same example with a CRC-32C trailer ("Signature calculations for
/// trailing headers").
const DOC_TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
const DOC_TRAILER_CHUNK_SIGS: [&str; 3] = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
];
const DOC_TRAILER_SIG: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

struct Keys;
impl SecretLookup for Keys {
    fn secret(&self, akid: &str) -> Option<&str> {
        (akid == AKID).then_some(SECRET)
    }
}

// --- A signer written from AWS's description, sharing no code with the
// --- verifier (its own HMAC chain, hashing and framing).

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct Signer {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
}

impl Signer {
    fn new(secret: &str, amz_date: &str, region: &str, service: &str) -> Signer {
        let date = &amz_date[..8];
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        Signer {
            key: hmac(&k, b"aws4_request"),
            amz_date: amz_date.into(),
            scope: format!("{date}/{region}/{service}/aws4_request"),
        }
    }

    fn doc() -> Signer {
        Signer::new(SECRET, DATE, "us-east-1", "s3")
    }

    fn chunk(&self, previous: &str, data: &[u8]) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{}\n{}",
            self.amz_date,
            self.scope,
            sha_hex(b""),
            sha_hex(data)
        );
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }

    fn trailer(&self, previous: &str, trailers: &[(&str, &str)]) -> String {
        let canonical: String = trailers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{previous}\n{}",
            self.amz_date,
            self.scope,
            sha_hex(canonical.as_bytes())
        );
        hex::encode(hmac(&self.key, sts.as_bytes()))
    }

    /// Signs a request's headers (the seed), adding `authorization`.
    fn request(&self, method: &str, path: &str, headers: &mut HeaderMap, payload: &str) -> String {
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        let canon: String = names
            .iter()
            .map(|n| format!("{n}:{}\n", headers[*n].to_str().unwrap().trim()))
            .collect();
        let signed = names.join(";");
        let canonical = format!("{method}\n{path}\n\n{canon}\n{signed}\n{payload}");
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            sha_hex(canonical.as_bytes())
        );
        let sig = hex::encode(hmac(&self.key, sts.as_bytes()));
        let akid = AKID;
        headers.insert(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={akid}/{}, SignedHeaders={signed}, Signature={sig}",
                self.scope
            )
            .parse()
            .unwrap(),
        );
        sig
    }

    fn context(&self, seed: &str) -> SigningContext {
        let parts: Vec<&str> = self.scope.split('/').collect();
        SigningContext::new(SECRET, &self.amz_date, parts[1], parts[2], seed)
    }
}

/// Frames `chunks` (then the final chunk and `trailers`) as `mode` sends them.
fn encode(
    mode: StreamingMode,
    signer: &Signer,
    seed: &str,
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut previous = seed.to_string();
    for data in chunks.iter().copied().chain([&b""[..]]) {
        out.extend_from_slice(format!("{:x}", data.len()).as_bytes());
        if mode.signed() {
            previous = signer.chunk(&previous, data);
            out.extend_from_slice(format!(";chunk-signature={previous}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !data.is_empty() {
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
    }
    if mode == StreamingMode::SignedTrailer {
        let sig = signer.trailer(&previous, trailers);
        out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

struct Outcome {
    chunks: Vec<Bytes>,
    result: Result<(), ChunkedError>,
    trailers: Vec<(String, String)>,
}

impl Outcome {
    fn data(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// Feeds `body` cut at `cuts`, taking every chunk decoded, then ends the input.
fn run(mut d: ChunkedDecoder, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut chunks = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
    bounds.push(body.len());
    bounds.sort_unstable();
    let mut at = 0;
    let finish = |d: &ChunkedDecoder, chunks, result| Outcome {
        chunks,
        result,
        trailers: d.trailers().to_vec(),
    };
    for end in bounds {
        d.feed(Bytes::copy_from_slice(&body[at..end]));
        at = end;
        loop {
            match d.decode() {
                Ok(Decoded::Data(b)) => {
                    assert!(!b.is_empty(), "empty data chunk");
                    chunks.push(b);
                }
                Ok(Decoded::NeedMore | Decoded::End) => break,
                Err(e) => return finish(&d, chunks, Err(e)),
            }
        }
    }
    let result = d.end_of_input();
    finish(&d, chunks, result)
}

fn doc_body() -> Vec<u8> {
    let a = vec![b'a'; 66_560];
    encode(
        StreamingMode::Signed,
        &Signer::doc(),
        DOC_SEED,
        &[&a[..65_536], &a[65_536..]],
        &[],
    )
}

fn doc_decoder(declared: u64) -> ChunkedDecoder {
    ChunkedDecoder::new(
        StreamingMode::Signed,
        Some(Signer::doc().context(DOC_SEED)),
        declared,
        &[],
        Limits::default(),
    )
}

fn doc_headers(trailer: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "s3.amazonaws.com".parse().unwrap());
    h.insert("x-amz-date", DATE.parse().unwrap());
    h.insert("x-amz-storage-class", "REDUCED_REDUNDANCY".parse().unwrap());
    h.insert("content-encoding", "aws-chunked".parse().unwrap());
    h.insert("x-amz-decoded-content-length", "66560".parse().unwrap());
    if trailer {
        h.insert(
            "x-amz-content-sha256",
            STREAMING_SIGNED_TRAILER.parse().unwrap(),
        );
        h.insert("x-amz-trailer", "x-amz-checksum-crc32c".parse().unwrap());
    } else {
        h.insert("x-amz-content-sha256", STREAMING_SIGNED.parse().unwrap());
        h.insert("content-length", "66824".parse().unwrap());
    }
    h
}

fn doc_verify(headers: &HeaderMap, signed: &str, seed: &str) -> Result<Option<Claims>, WireError> {
    let mut headers = headers.clone();
    headers.insert(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={seed}"
        )
        .parse()
        .unwrap(),
    );
    let parts = RequestParts {
        method: "PUT",
        path: "/examplebucket/chunkObject.txt",
        query: "",
        host: Some("s3.amazonaws.com"),
        headers: &headers,
        body: b"",
    };
    sigv4::verify(
        &parts,
        &Keys,
        "us-east-1",
        "s3",
        sigv4::parse_amz_date(DATE).unwrap(),
    )
}

/// AWS's worked example, "Transferring Payload in Multiple Chunks": the
/// published seed is what `verify` accepts and hands on, the published chunk
/// signatures are what the documented algorithm gives, and the body framed
/// with them decodes to the 66560 bytes in two chunks.
#[test]
fn the_published_chunked_upload_example() {
    let headers = doc_headers(false);
    let claims = doc_verify(
        &headers,
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
        DOC_SEED,
    )
    .unwrap()
    .unwrap();
    assert_eq!(claims.streaming, Some(StreamingMode::Signed));
    assert_eq!(claims.signing.seed_signature, DOC_SEED);
    assert_eq!(claims.signing.amz_date, DATE);
    assert_eq!(claims.signing.scope, "20130524/us-east-1/s3/aws4_request");

    let signer = Signer::doc();
    let a = vec![b'a'; 65_536];
    let s1 = signer.chunk(DOC_SEED, &a);
    let s2 = signer.chunk(&s1, &a[..1024]);
    let s3 = signer.chunk(&s2, b"");
    assert_eq!([s1.as_str(), &s2, &s3], DOC_CHUNK_SIGS);

    // The body exactly as the documentation shows it.
    let mut body = Vec::new();
    body.extend_from_slice(format!("10000;chunk-signature={}\r\n", DOC_CHUNK_SIGS[0]).as_bytes());
    body.extend_from_slice(&a);
    body.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", DOC_CHUNK_SIGS[1]).as_bytes());
    body.extend_from_slice(&a[..1024]);
    body.extend_from_slice(
        format!("\r\n0;chunk-signature={}\r\n\r\n", DOC_CHUNK_SIGS[2]).as_bytes(),
    );
    assert_eq!(body.len(), 66_824, "the documented Content-Length");
    assert_eq!(body, doc_body());

    let decoder = ChunkedDecoder::for_request(&headers, &claims, Limits::default())
        .unwrap()
        .unwrap();
    let out = run(decoder, &body, &[]);
    out.result.clone().unwrap();
    assert_eq!(
        out.chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        [65_536, 1024]
    );
    assert!(out.data().iter().all(|&b| b == b'a'));
    assert!(out.trailers.is_empty());

    // A seed signature one digit off is refused by the header check itself.
    let mut wrong = DOC_SEED.to_string();
    wrong.replace_range(..1, "5");
    let e = doc_verify(
        &headers,
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
        &wrong,
    )
    .unwrap_err();
    assert_eq!(e.code, "InvalidSignatureException");
}

/// The trailing-header example of the same documentation: a CRC-32C trailer,
/// signed after the final chunk.
#[test]
fn the_published_trailer_example() {
    let headers = doc_headers(true);
    let claims = doc_verify(
        &headers,
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer",
        DOC_TRAILER_SEED,
    )
    .unwrap()
    .unwrap();
    assert_eq!(claims.streaming, Some(StreamingMode::SignedTrailer));

    let a = vec![b'a'; 66_560];
    let trailers = [("x-amz-checksum-crc32c", "sOO8/Q==")];
    let body = encode(
        StreamingMode::SignedTrailer,
        &Signer::doc(),
        DOC_TRAILER_SEED,
        &[&a[..65_536], &a[65_536..]],
        &trailers,
    );
    let text = String::from_utf8_lossy(&body);
    for sig in DOC_TRAILER_CHUNK_SIGS.iter().chain([&DOC_TRAILER_SIG]) {
        assert!(text.contains(sig), "{sig} is not what the algorithm gives");
    }
    let decoder = ChunkedDecoder::for_request(&headers, &claims, Limits::default())
        .unwrap()
        .unwrap();
    let out = run(decoder, &body, &[100, 70_000]);
    out.result.clone().unwrap();
    assert_eq!(out.data(), a);
    assert_eq!(
        out.trailers,
        [("x-amz-checksum-crc32c".to_string(), "sOO8/Q==".to_string())]
    );
}

#[test]
fn streaming_payloads_only_for_s3_and_kinesis_video() {
    for (service, streams) in [
        ("s3", true),
        ("kinesisvideo", true),
        ("kinesis", false),
        ("dynamodb", false),
    ] {
        for mode in [
            StreamingMode::Signed,
            StreamingMode::SignedTrailer,
            StreamingMode::UnsignedTrailer,
        ] {
            // Unsigned chunks only where UNSIGNED-PAYLOAD is accepted (S3),
            // and there with a checksum trailer (sigv4's own tests).
            let allowed = streams && (mode.signed() || service == "s3");
            if allowed && !mode.signed() {
                continue;
            }
            let now = sigv4::parse_amz_date(DATE).unwrap();
            let signer = Signer::new(SECRET, DATE, "us-east-1", service);
            let mut h = HeaderMap::new();
            h.insert("host", "localhost".parse().unwrap());
            h.insert("x-amz-date", DATE.parse().unwrap());
            h.insert("x-amz-content-sha256", mode.as_str().parse().unwrap());
            h.insert("x-amz-decoded-content-length", "3".parse().unwrap());
            let seed = signer.request("PUT", "/b/k", &mut h, mode.as_str());
            let parts = RequestParts {
                method: "PUT",
                path: "/b/k",
                query: "",
                host: None,
                headers: &h,
                body: b"",
            };
            let result = sigv4::verify(&parts, &Keys, "us-east-1", service, now);
            if allowed {
                let claims = result.unwrap().unwrap();
                assert_eq!(claims.streaming, Some(mode), "{service}");
                assert_eq!(claims.signing.seed_signature, seed);
                // And the body signed from that seed decodes.
                let body = encode(mode, &signer, &seed, &[b"abc"], &[]);
                let d = ChunkedDecoder::for_request(&h, &claims, Limits::default())
                    .unwrap()
                    .unwrap();
                let out = run(d, &body, &[]);
                out.result.clone().unwrap();
                assert_eq!(out.data(), b"abc");
            } else {
                let e = result.unwrap_err();
                assert_eq!(e.code, "InvalidSignatureException", "{service}");
                assert!(e.message.contains("x-amz-content-sha256"), "{}", e.message);
            }
        }
    }
}

#[test]
fn a_request_without_streaming_has_no_decoder() {
    let now = sigv4::parse_amz_date(DATE).unwrap();
    let signer = Signer::new(SECRET, DATE, "us-east-1", "s3");
    let mut h = HeaderMap::new();
    h.insert("host", "localhost".parse().unwrap());
    h.insert("x-amz-date", DATE.parse().unwrap());
    h.insert("x-amz-content-sha256", sha_hex(b"abc").parse().unwrap());
    signer.request("PUT", "/b/k", &mut h, &sha_hex(b"abc"));
    let parts = RequestParts {
        method: "PUT",
        path: "/b/k",
        query: "",
        host: None,
        headers: &h,
        body: b"abc",
    };
    let claims = sigv4::verify(&parts, &Keys, "us-east-1", "s3", now)
        .unwrap()
        .unwrap();
    assert_eq!(claims.streaming, None);
    assert!(
        ChunkedDecoder::for_request(&h, &claims, Limits::default())
            .unwrap()
            .is_none()
    );
    // A streaming request must say how long the decoded body is.
    let mut claims = claims;
    claims.streaming = Some(StreamingMode::Signed);
    let e = ChunkedDecoder::for_request(&h, &claims, Limits::default()).unwrap_err();
    assert_eq!(e, ChunkedError::MissingDecodedContentLength);
    h.insert("x-amz-decoded-content-length", "-1".parse().unwrap());
    let e = ChunkedDecoder::for_request(&h, &claims, Limits::default()).unwrap_err();
    assert!(matches!(e, ChunkedError::Malformed(_)), "{e:?}");
}

#[test]
fn tampered_chunk_data_is_never_released() {
    let body = doc_body();
    // A byte of the first chunk: nothing comes out.
    let mut b = body.clone();
    b[1000] = b'b';
    let out = run(doc_decoder(66_560), &b, &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    assert!(out.chunks.is_empty());
    // A byte of the second: only the first chunk, which verified, comes out.
    let mut b = body.clone();
    let second = body.len() - 200;
    b[second] = b'b';
    let out = run(doc_decoder(66_560), &b, &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    assert_eq!(out.data().len(), 65_536);
    // A chunk signature changed, or the final one.
    for sig in DOC_CHUNK_SIGS {
        let text = String::from_utf8_lossy(&body).replace(sig, &"0".repeat(64));
        let out = run(doc_decoder(66_560), text.as_bytes(), &[]);
        assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    }
    // Upper-case hex is the same signature.
    let text = String::from_utf8_lossy(&body)
        .replace(DOC_CHUNK_SIGS[0], &DOC_CHUNK_SIGS[0].to_ascii_uppercase());
    run(doc_decoder(66_560), text.as_bytes(), &[])
        .result
        .unwrap();
    // Another key's chain does not verify.
    let other = Signer::new("another secret", DATE, "us-east-1", "s3");
    let a = vec![b'a'; 66_560];
    let forged = encode(
        StreamingMode::Signed,
        &other,
        DOC_SEED,
        &[&a[..65_536], &a[65_536..]],
        &[],
    );
    let out = run(doc_decoder(66_560), &forged, &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    assert!(out.chunks.is_empty());
}

#[test]
fn reordered_replayed_or_dropped_chunks_break_the_chain() {
    let signer = Signer::doc();
    let limits = Limits {
        min_chunk_size: 0,
        ..Limits::default()
    };
    let decoder = || {
        ChunkedDecoder::new(
            StreamingMode::Signed,
            Some(signer.context(DOC_SEED)),
            9,
            &[],
            limits,
        )
    };
    let s1 = signer.chunk(DOC_SEED, b"one");
    let s2 = signer.chunk(&s1, b"two");
    let s3 = signer.chunk(&s2, b"333");
    let s_end = signer.chunk(&s3, b"");
    let frame =
        |data: &str, sig: &str| format!("{:x};chunk-signature={sig}\r\n{data}\r\n", data.len());
    let end = |sig: &str| format!("0;chunk-signature={sig}\r\n\r\n");
    let good = [
        frame("one", &s1),
        frame("two", &s2),
        frame("333", &s3),
        end(&s_end),
    ]
    .concat();
    assert_eq!(run(decoder(), good.as_bytes(), &[]).data(), b"onetwo333");
    // Swapped.
    let swapped = [
        frame("two", &s2),
        frame("one", &s1),
        frame("333", &s3),
        end(&s_end),
    ]
    .concat();
    let out = run(decoder(), swapped.as_bytes(), &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    assert!(out.chunks.is_empty());
    // A chunk replayed in place of the next.
    let replayed = [
        frame("one", &s1),
        frame("one", &s1),
        frame("333", &s3),
        end(&s_end),
    ]
    .concat();
    let out = run(decoder(), replayed.as_bytes(), &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    assert_eq!(out.data(), b"one");
    // The body cut short with a final chunk signed for another place.
    let cut = [frame("one", &s1), frame("two", &s2), end(&s_end)].concat();
    let out = run(
        ChunkedDecoder::new(
            StreamingMode::Signed,
            Some(signer.context(DOC_SEED)),
            6,
            &[],
            limits,
        ),
        cut.as_bytes(),
        &[],
    );
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
    // Data and signature of two chunks exchanged.
    let crossed = [
        frame("one", &s2),
        frame("two", &s1),
        frame("333", &s3),
        end(&s_end),
    ]
    .concat();
    let out = run(decoder(), crossed.as_bytes(), &[]);
    assert_eq!(out.result, Err(ChunkedError::SignatureDoesNotMatch));
}

#[test]
fn a_truncated_body_is_incomplete_wherever_it_stops() {
    let signer = Signer::doc();
    let limits = Limits {
        min_chunk_size: 0,
        ..Limits::default()
    };
    for mode in [
        StreamingMode::Signed,
        StreamingMode::SignedTrailer,
        StreamingMode::UnsignedTrailer,
    ] {
        let mut crc = Checksum::for_trailer("x-amz-checksum-crc32").unwrap();
        crc.update(b"hello world");
        let crc = crc.finish();
        let all = [("x-amz-checksum-crc32", crc.as_str())];
        let trailers = if mode.has_trailer() { &all[..] } else { &[] };
        let body = encode(
            mode,
            &signer,
            DOC_SEED,
            &[b"hello", b" ", b"world"],
            trailers,
        );
        let decoder = || {
            ChunkedDecoder::new(
                mode,
                Some(signer.context(DOC_SEED)),
                11,
                &["x-amz-checksum-crc32"][..usize::from(mode.has_trailer())],
                limits,
            )
        };
        let whole = run(decoder(), &body, &[]);
        whole.result.clone().unwrap();
        assert_eq!(whole.data(), b"hello world");
        for len in 0..body.len() {
            let out = run(decoder(), &body[..len], &[len / 2]);
            assert_eq!(
                out.result,
                Err(ChunkedError::IncompleteBody),
                "{mode:?} cut at {len}"
            );
        }
    }
    // The documented body cut inside its first chunk's data.
    let body = doc_body();
    let out = run(doc_decoder(66_560), &body[..40_000], &[1, 20_000]);
    assert_eq!(out.result, Err(ChunkedError::IncompleteBody));
    assert!(out.chunks.is_empty());
}

#[test]
fn the_decoded_length_must_be_the_declared_one() {
    let body = doc_body();
    // Declared shorter: the second chunk is refused before it is read.
    let out = run(doc_decoder(66_559), &body, &[]);
    assert_eq!(
        out.result,
        Err(ChunkedError::DecodedLengthMismatch {
            declared: 66_559,
            provided: 66_560
        })
    );
    assert_eq!(out.data().len(), 65_536);
    // Declared longer: the final chunk ends it too early.
    let out = run(doc_decoder(66_561), &body, &[]);
    assert_eq!(
        out.result,
        Err(ChunkedError::DecodedLengthMismatch {
            declared: 66_561,
            provided: 66_560
        })
    );
    let e = out.result.unwrap_err();
    assert_eq!(e.code(Dialect::S3), "IncompleteBody");
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn chunk_size_limits() {
    let signer = Signer::doc();
    let sig = "0".repeat(64);
    // Larger than the cap: refused from the header, before any data.
    for header in [
        format!("1000001;chunk-signature={sig}\r\n"),
        format!("ffffffffffffffffffffffff;chunk-signature={sig}\r\n"),
        format!("{}1000001;chunk-signature={sig}\r\n", "0".repeat(100)),
    ] {
        let mut d = doc_decoder(u64::MAX);
        d.feed(Bytes::from(header));
        let e = d.decode().unwrap_err();
        assert!(matches!(e, ChunkedError::ChunkTooLarge { .. }), "{e:?}");
        assert_eq!(e.code(Dialect::S3), "InvalidChunkSizeError");
    }
    // A cap of one's own.
    let limits = Limits {
        max_chunk_size: 4,
        min_chunk_size: 0,
        ..Limits::default()
    };
    let body = encode(StreamingMode::Signed, &signer, DOC_SEED, &[b"12345"], &[]);
    let d = ChunkedDecoder::new(
        StreamingMode::Signed,
        Some(signer.context(DOC_SEED)),
        5,
        &[],
        limits,
    );
    assert_eq!(
        run(d, &body, &[]).result,
        Err(ChunkedError::ChunkTooLarge { size: 5, max: 4 })
    );
    // Short chunks: only the last may be under 8 KiB in the signed modes.
    let small = [b'x'; 100];
    let big = vec![b'y'; 8192];
    for (chunks, ok) in [
        (vec![&big[..], &small[..]], true),
        (vec![&small[..]], true),
        (vec![&big[..], &big[..]], true),
        (vec![&small[..], &big[..]], false),
        (vec![&big[..], &small[..], &small[..]], false),
    ] {
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let body = encode(StreamingMode::Signed, &signer, DOC_SEED, &chunks, &[]);
        let d = ChunkedDecoder::new(
            StreamingMode::Signed,
            Some(signer.context(DOC_SEED)),
            total as u64,
            &[],
            Limits::default(),
        );
        let out = run(d, &body, &[]);
        if ok {
            out.result.clone().unwrap();
        } else {
            assert_eq!(out.result, Err(ChunkedError::ChunkTooSmall { min: 8192 }));
        }
        // Unsigned chunks may be any size.
        let body = encode(StreamingMode::UnsignedTrailer, &signer, "", &chunks, &[]);
        let d = ChunkedDecoder::new(
            StreamingMode::UnsignedTrailer,
            None,
            total as u64,
            &[],
            Limits::default(),
        );
        run(d, &body, &[]).result.unwrap();
    }
}

#[test]
fn oversized_header_lines_are_refused_without_buffering() {
    // A header line that never ends: refused once it passes the cap, having
    // held no more than the cap, however much is fed.
    let mut d = doc_decoder(66_560);
    let mut refused = false;
    for _ in 0..1000 {
        d.feed(Bytes::from(vec![b'1'; 100]));
        match d.decode() {
            Ok(Decoded::NeedMore) => assert!(d.line.len() <= 258),
            Err(e) => {
                assert_eq!(e, ChunkedError::Malformed("chunk header too long"));
                refused = true;
                break;
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!(refused);
    // A chunk's data arriving in small pieces is held in at most its size.
    let body = doc_body();
    let mut d = doc_decoder(66_560);
    let mut most = 0;
    for piece in body.chunks(1000) {
        d.feed(Bytes::copy_from_slice(piece));
        while let Decoded::Data(_) = d.decode().unwrap() {}
        most = most.max(d.partial.capacity());
    }
    d.end_of_input().unwrap();
    assert!(most > 60_000 && most <= 65_536, "{most}");
    // A header alone holds nothing.
    let mut d = doc_decoder(u64::MAX);
    d.feed(Bytes::from(format!(
        "ffffff;chunk-signature={}\r\n",
        "0".repeat(64)
    )));
    assert_eq!(d.decode(), Ok(Decoded::NeedMore));
    assert_eq!(d.partial.capacity(), 0);
    // In one piece.
    let mut d = doc_decoder(u64::MAX);
    d.feed(Bytes::from(vec![b'a'; 10 << 20]));
    assert!(d.decode().is_err());
    assert!(d.input.is_empty() && d.line.capacity() < 1024);
    // And the same for trailer lines.
    let signer = Signer::doc();
    let long = "A".repeat(300);
    let body = encode(
        StreamingMode::UnsignedTrailer,
        &signer,
        "",
        &[b"abc"],
        &[("x-amz-checksum-crc32", &long)],
    );
    let d = ChunkedDecoder::new(
        StreamingMode::UnsignedTrailer,
        None,
        3,
        &["x-amz-checksum-crc32"],
        Limits::default(),
    );
    assert_eq!(
        run(d, &body, &[]).result,
        Err(ChunkedError::MalformedTrailer("trailer line too long"))
    );
}

#[test]
fn malformed_framing() {
    let signer = Signer::doc();
    let limits = Limits {
        min_chunk_size: 0,
        ..Limits::default()
    };
    let s1 = signer.chunk(DOC_SEED, b"abc");
    let s2 = signer.chunk(&s1, b"");
    let good = format!("3;chunk-signature={s1}\r\nabc\r\n0;chunk-signature={s2}\r\n\r\n");
    let decode = |body: &str| {
        let d = ChunkedDecoder::new(
            StreamingMode::Signed,
            Some(signer.context(DOC_SEED)),
            3,
            &[],
            limits,
        );
        run(d, body.as_bytes(), &[])
    };
    assert_eq!(decode(&good).data(), b"abc");
    for (body, expected) in [
        // No CRLF after the data.
        (
            good.replace("abc\r\n", "abcX\n"),
            "chunk data not followed by CRLF",
        ),
        (
            good.replace("abc\r\n", "abc0;"),
            "chunk data not followed by CRLF",
        ),
        // Bare LF ends a header line.
        (good.replacen("\r\n", "\n", 1), "line not ended by CRLF"),
        // A size that is not hex, or absent.
        (
            good.replacen("3;", "x3;", 1),
            "chunk size is not hexadecimal",
        ),
        (good.replacen("3;", ";", 1), "chunk size is not hexadecimal"),
        (
            good.replacen("3;", " 3;", 1),
            "chunk size is not hexadecimal",
        ),
        // No, or a broken, signature extension.
        (
            good.replacen(&format!(";chunk-signature={s1}"), "", 1),
            "chunk header without chunk-signature",
        ),
        (
            good.replacen("chunk-signature=", "chunk-signatur=", 1),
            "chunk header without chunk-signature",
        ),
        (
            good.replacen(&s1, &s1[..63], 1),
            "chunk-signature is not 64 hex digits",
        ),
        (
            good.replacen(&s1, &format!("{s1}0"), 1),
            "chunk-signature is not 64 hex digits",
        ),
        (
            good.replacen(&s1[..2], "zz", 1),
            "chunk-signature is not 64 hex digits",
        ),
        // Data after the end, or trailers where there are none.
        (format!("{good}x"), "data after the final chunk"),
        (format!("{good}{good}"), "data after the final chunk"),
        (
            good.replace("\r\n\r\n", "\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"),
            "trailers after the final chunk",
        ),
    ] {
        let out = decode(&body);
        assert_eq!(
            out.result,
            Err(ChunkedError::Malformed(expected)),
            "{body:?}"
        );
        assert_eq!(
            out.result.as_ref().unwrap_err().code(Dialect::S3),
            "InvalidRequest"
        );
    }
    // The size of the data matters: a chunk that says 4 but carries 3.
    let out = decode(&good.replacen("3;", "4;", 1));
    assert!(out.result.is_err());
    assert!(out.chunks.is_empty());
    // A failed decoder stays failed.
    let mut d = ChunkedDecoder::new(
        StreamingMode::Signed,
        Some(signer.context(DOC_SEED)),
        3,
        &[],
        limits,
    );
    d.feed(Bytes::from_static(b"zz\r\n"));
    let e = d.decode().unwrap_err();
    d.feed(Bytes::from(good.clone()));
    assert_eq!(d.decode().unwrap_err(), e);
    assert_eq!(d.end_of_input().unwrap_err(), e);
}

#[test]
fn trailers_signed_and_checked() {
    let signer = Signer::doc();
    let limits = Limits {
        min_chunk_size: 0,
        ..Limits::default()
    };
    let data = b"123456789";
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let checksums = [
        ("x-amz-checksum-crc32", b64(&0xCBF4_3926u32.to_be_bytes())),
        ("x-amz-checksum-crc32c", b64(&0xE306_9283u32.to_be_bytes())),
        (
            "x-amz-checksum-crc64nvme",
            b64(&0xAE8B_1486_0A79_9888u64.to_be_bytes()),
        ),
        ("x-amz-checksum-sha256", b64(&Sha256::digest(data))),
    ];
    let decoder = |mode, declared: &[&str]| {
        ChunkedDecoder::new(mode, Some(signer.context(DOC_SEED)), 9, declared, limits)
    };
    for mode in [StreamingMode::SignedTrailer, StreamingMode::UnsignedTrailer] {
        for (name, value) in &checksums {
            let body = encode(
                mode,
                &signer,
                DOC_SEED,
                &[b"1234", b"56789"],
                &[(name, value)],
            );
            let out = run(decoder(mode, &[name]), &body, &[3, 40]);
            out.result.clone().unwrap();
            assert_eq!(out.data(), data);
            assert_eq!(out.trailers, [(name.to_string(), value.clone())]);
            // Another value is a bad digest (and, signed, still signed right).
            let wrong = b64(&[0; 4]);
            let body = encode(
                mode,
                &signer,
                DOC_SEED,
                &[b"1234", b"56789"],
                &[(name, &wrong)],
            );
            let e = run(decoder(mode, &[name]), &body, &[]).result.unwrap_err();
            assert!(matches!(e, ChunkedError::BadDigest { .. }), "{e:?}");
            assert_eq!(e.code(Dialect::S3), "BadDigest");
        }
        // Two trailers, declared in one header value.
        let two = [
            ("x-amz-checksum-crc32", checksums[0].1.as_str()),
            ("x-amz-meta-x", "y"),
        ];
        let body = encode(mode, &signer, DOC_SEED, &[data], &two);
        run(
            decoder(mode, &["x-amz-checksum-crc32", " x-amz-meta-x"]),
            &body,
            &[],
        )
        .result
        .unwrap();
        // Undeclared, missing, sent twice.
        let body = encode(mode, &signer, DOC_SEED, &[data], &two);
        let e = run(decoder(mode, &["x-amz-checksum-crc32"]), &body, &[]).result;
        assert_eq!(
            e,
            Err(ChunkedError::MalformedTrailer(
                "a trailer x-amz-trailer did not declare"
            ))
        );
        let body = encode(mode, &signer, DOC_SEED, &[data], &two[..1]);
        let e = run(
            decoder(mode, &["x-amz-checksum-crc32", "x-amz-meta-x"]),
            &body,
            &[],
        )
        .result;
        assert_eq!(
            e,
            Err(ChunkedError::MalformedTrailer(
                "a trailer x-amz-trailer declared is missing"
            ))
        );
        let twice = [two[0], two[0]];
        let body = encode(mode, &signer, DOC_SEED, &[data], &twice);
        let e = run(decoder(mode, &["x-amz-checksum-crc32"]), &body, &[]).result;
        assert_eq!(
            e,
            Err(ChunkedError::MalformedTrailer("a trailer sent twice"))
        );
    }
    // The trailer signature: wrong, missing, chained from the seed instead
    // of the final chunk, or followed by more trailers.
    let mode = StreamingMode::SignedTrailer;
    let name = checksums[0].0;
    let value = checksums[0].1.as_str();
    let body =
        String::from_utf8(encode(mode, &signer, DOC_SEED, &[data], &[(name, value)])).unwrap();
    let sig_at = body.find("x-amz-trailer-signature:").unwrap() + 24;
    let sig = &body[sig_at..sig_at + 64];
    for (tampered, expected) in [
        (
            body.replace(sig, &"1".repeat(64)),
            ChunkedError::SignatureDoesNotMatch,
        ),
        (
            body.replace(sig, &sig[..10]),
            ChunkedError::SignatureDoesNotMatch,
        ),
        (
            body.replace(&format!("x-amz-trailer-signature:{sig}\r\n"), ""),
            ChunkedError::SignatureDoesNotMatch,
        ),
        (
            body.replace(sig, &signer.trailer(DOC_SEED, &[(name, value)])),
            ChunkedError::SignatureDoesNotMatch,
        ),
        (
            body.replace(value, "AAAAAA=="),
            ChunkedError::SignatureDoesNotMatch,
        ),
        (
            body.replace(
                &format!("{sig}\r\n"),
                &format!("{sig}\r\nx-amz-meta-x:y\r\n"),
            ),
            ChunkedError::MalformedTrailer("a trailer after x-amz-trailer-signature"),
        ),
        (
            body.replace(&format!("{name}:"), &format!("{name} ")),
            ChunkedError::MalformedTrailer("a trailer line without ':'"),
        ),
    ] {
        let out = run(decoder(mode, &[name]), tampered.as_bytes(), &[]);
        assert_eq!(out.result, Err(expected), "{tampered:?}");
    }
    // A trailer signature where none is expected.
    let plain = encode(
        StreamingMode::UnsignedTrailer,
        &signer,
        "",
        &[data],
        &[(name, value)],
    );
    let with_sig = format!(
        "{}x-amz-trailer-signature:{}\r\n\r\n",
        String::from_utf8_lossy(&plain[..plain.len() - 2]),
        "0".repeat(64)
    );
    let e = run(
        decoder(StreamingMode::UnsignedTrailer, &[name]),
        with_sig.as_bytes(),
        &[],
    )
    .result;
    assert_eq!(
        e,
        Err(ChunkedError::MalformedTrailer(
            "x-amz-trailer-signature on unsigned trailers"
        ))
    );
}

#[test]
fn error_codes_and_statuses() {
    let sig = ChunkedError::SignatureDoesNotMatch;
    assert_eq!(sig.code(Dialect::S3), "SignatureDoesNotMatch");
    assert_eq!(sig.code(Dialect::Json), "InvalidSignatureException");
    assert_eq!(sig.status(), StatusCode::FORBIDDEN);
    let w = sig.to_wire(Dialect::S3);
    assert_eq!(
        (w.status, w.code),
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
    );
    assert!(w.message.starts_with("The request signature we calculated"));
    for (e, code) in [
        (ChunkedError::IncompleteBody, "IncompleteBody"),
        (
            ChunkedError::ChunkTooSmall { min: 8192 },
            "InvalidChunkSizeError",
        ),
        (
            ChunkedError::ChunkTooLarge { size: 1, max: 0 },
            "InvalidChunkSizeError",
        ),
        (ChunkedError::Malformed("x"), "InvalidRequest"),
        (ChunkedError::MalformedTrailer("x"), "MalformedTrailerError"),
        (ChunkedError::BadDigest { algorithm: "CRC32" }, "BadDigest"),
    ] {
        assert_eq!(e.code(Dialect::S3), code);
        assert_eq!(e.code(Dialect::Json), code);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
    }
    assert_eq!(
        ChunkedError::MissingDecodedContentLength.status(),
        StatusCode::LENGTH_REQUIRED
    );
}

#[test]
fn the_signing_key_is_never_printed() {
    let ctx = Signer::doc().context(DOC_SEED);
    let shown = format!("{ctx:?}");
    assert!(
        shown.contains("<redacted>") && shown.contains(DOC_SEED),
        "{shown}"
    );
    let key_hex = hex::encode(&Signer::doc().key);
    assert!(!shown.contains(&key_hex[..16]));
    let key_bytes = format!("{:?}", &Signer::doc().key[..4]);
    assert!(!shown.contains(key_bytes.trim_matches(['[', ']'])));
}

#[test]
fn content_encoding_without_aws_chunked() {
    assert_eq!(decoded_content_encoding("aws-chunked"), None);
    assert_eq!(
        decoded_content_encoding("aws-chunked, gzip"),
        Some("gzip".into())
    );
    assert_eq!(
        decoded_content_encoding("gzip,AWS-CHUNKED"),
        Some("gzip".into())
    );
    assert_eq!(decoded_content_encoding(""), None);
}

/// A body from a list of pieces, one frame each.
struct Pieces(VecDeque<Result<Bytes, std::io::Error>>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|r| r.map(Frame::data)))
    }
}

fn pieces(body: &[u8], size: usize) -> Pieces {
    Pieces(
        body.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
    )
}

#[tokio::test]
async fn the_body_adapter_yields_verified_data_then_the_trailers() {
    let signer = Signer::doc();
    let a = vec![b'a'; 66_560];
    let body = encode(
        StreamingMode::SignedTrailer,
        &signer,
        DOC_TRAILER_SEED,
        &[&a[..65_536], &a[65_536..]],
        &[("x-amz-checksum-crc32c", "sOO8/Q==")],
    );
    let decoder = ChunkedDecoder::new(
        StreamingMode::SignedTrailer,
        Some(signer.context(DOC_TRAILER_SEED)),
        66_560,
        &["x-amz-checksum-crc32c"],
        Limits::default(),
    );
    let collected = ChunkedBody::new(pieces(&body, 1000), decoder)
        .collect()
        .await
        .unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["x-amz-checksum-crc32c"], "sOO8/Q==");
    assert!(!trailers.contains_key("x-amz-trailer-signature"));
    assert_eq!(collected.to_bytes(), a);

    // Without trailers the body just ends.
    let collected = ChunkedBody::new(pieces(&doc_body(), 7777), doc_decoder(66_560))
        .collect()
        .await
        .unwrap();
    assert!(collected.trailers().is_none());
    assert_eq!(collected.to_bytes().len(), 66_560);

    // A body that stops early, a tampered one, and one whose transport fails.
    let body = doc_body();
    let e = ChunkedBody::new(pieces(&body[..66_000], 4096), doc_decoder(66_560))
        .collect()
        .await
        .unwrap_err();
    assert!(
        matches!(e, ChunkedBodyError::Chunked(ChunkedError::IncompleteBody)),
        "{e}"
    );
    let mut tampered = body.clone();
    tampered[66_000] ^= 1;
    let mut b = ChunkedBody::new(pieces(&tampered, 4096), doc_decoder(66_560));
    let first = b.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.len(), 65_536);
    let e = b.frame().await.unwrap().unwrap_err();
    assert!(matches!(
        e,
        ChunkedBodyError::Chunked(ChunkedError::SignatureDoesNotMatch)
    ));
    let mut broken = pieces(&body[..1000], 100);
    broken.0.push_back(Err(std::io::Error::other("reset")));
    let e = ChunkedBody::new(broken, doc_decoder(66_560))
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(e, ChunkedBodyError::Body(_)), "{e}");
}

fn any_mode() -> impl Strategy<Value = StreamingMode> {
    prop_oneof![
        Just(StreamingMode::Signed),
        Just(StreamingMode::SignedTrailer),
        Just(StreamingMode::UnsignedTrailer),
    ]
}

fn small_limits() -> Limits {
    Limits {
        min_chunk_size: 0,
        ..Limits::default()
    }
}

proptest! {
    /// Chunks of any sizes, signed by the signer above, fed cut anywhere,
    /// decode to the data in the same chunks.
    #[test]
    fn round_trip_in_random_pieces(
        mode in any_mode(),
        sizes in proptest::collection::vec(1usize..3000, 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        seed in "[0-9a-f]{64}",
    ) {
        let signer = Signer::new(SECRET, "20261203T101500Z", "eu-west-1", "s3");
        let data: Vec<u8> = (0..sizes.iter().sum::<usize>()).map(|i| (i * 7 % 251) as u8).collect();
        let mut chunks = Vec::new();
        let mut at = 0;
        for s in &sizes {
            chunks.push(&data[at..at + s]);
            at += s;
        }
        let mut crc = Checksum::for_trailer("x-amz-checksum-crc32").unwrap();
        crc.update(&data);
        let crc = crc.finish();
        let trailers = [("x-amz-checksum-crc32", crc.as_str())];
        let trailers = if mode.has_trailer() { &trailers[..] } else { &[] };
        let body = encode(mode, &signer, &seed, &chunks, trailers);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        let declared: Vec<&str> = trailers.iter().map(|t| t.0).collect();
        let d = ChunkedDecoder::new(mode, Some(signer.context(&seed)), data.len() as u64, &declared, small_limits());
        let out = run(d, &body, &cuts);
        prop_assert_eq!(out.result.clone(), Ok(()));
        prop_assert_eq!(out.data(), data.clone());
        prop_assert_eq!(out.chunks.iter().map(Bytes::len).collect::<Vec<_>>(), sizes);
    }
}

/// The checksums bit by bit, as their definitions go.
fn reference_crc(poly: u64, width: u32, data: &[u8]) -> u64 {
    let mask = if width == 64 { !0 } else { (1u64 << width) - 1 };
    let mut c = mask;
    for &b in data {
        c ^= b as u64;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
        }
    }
    !c & mask
}

proptest! {
    #[test]
    fn checksums_match_their_bitwise_definitions(
        data in proptest::collection::vec(any::<u8>(), 0..100),
        split in any::<usize>(),
    ) {
        let split = split % (data.len() + 1);
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        for (name, poly, width) in [
            ("x-amz-checksum-crc32", 0xEDB8_8320u64, 32),
            ("x-amz-checksum-crc32c", 0x82F6_3B78, 32),
            ("x-amz-checksum-crc64nvme", 0x9A6C_9329_AC4B_C9B5, 64),
        ] {
            let mut c = Checksum::for_trailer(name).unwrap();
            c.update(&data[..split]);
            c.update(&data[split..]);
            let want = reference_crc(poly, width, &data);
            let want = if width == 32 {
                b64(&(want as u32).to_be_bytes())
            } else {
                b64(&want.to_be_bytes())
            };
            prop_assert_eq!(c.finish(), want, "{}", name);
        }
    }
}

/// Fuzz targets (`fuzz/run.sh` runs everything named `fuzz`).
mod fuzz_chunked {
    use super::*;

    /// Pieces of framing, so generated bodies reach every state.
    const TOKENS: &[&str] = &[
        "0",
        "3",
        "a",
        "10",
        "ffffff",
        "1000001",
        ";",
        "chunk-signature=",
        "\r\n",
        "\r",
        "\n",
        ":",
        "abc",
        "x-amz-checksum-crc32",
        "x-amz-trailer-signature",
        "AAAAAA==",
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    ];

    fn decoder(mode: StreamingMode, declared: u64) -> ChunkedDecoder {
        ChunkedDecoder::new(
            mode,
            Some(Signer::doc().context(DOC_SEED)),
            declared,
            &["x-amz-checksum-crc32"],
            small_limits(),
        )
    }

    proptest! {
        /// Arbitrary bytes never panic, and in the signed modes never yield
        /// a byte (no signature can verify); unsigned, never more than declared.
        #[test]
        fn fuzz_chunked_arbitrary_bytes(
            mode in any_mode(),
            body in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            declared in 0u64..5000,
        ) {
            let out = run(decoder(mode, declared), &body, &cuts);
            let total = out.data().len() as u64;
            prop_assert!(total <= declared);
            if mode.signed() {
                prop_assert!(out.chunks.is_empty());
            }
            if out.result.is_ok() {
                prop_assert_eq!(total, declared);
            }
        }

        #[test]
        fn fuzz_chunked_framing_tokens(
            mode in any_mode(),
            tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            declared in 0u64..64,
        ) {
            let body = tokens.concat();
            let out = run(decoder(mode, declared), body.as_bytes(), &cuts);
            prop_assert!(out.data().len() as u64 <= declared);
            if mode.signed() {
                prop_assert!(out.chunks.is_empty());
            }
        }

        /// A signed body with bytes changed, inserted or removed: whatever
        /// comes out is a prefix of the signed data, in the signed chunks,
        /// and a body that ends well is the signed one.
        #[test]
        fn fuzz_chunked_mutations_never_yield_unsigned_data(
            signed_trailer in any::<bool>(),
            sizes in proptest::collection::vec(1usize..300, 1..5),
            edits in proptest::collection::vec((any::<usize>(), 0u8..3, any::<u8>()), 1..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mode = if signed_trailer { StreamingMode::SignedTrailer } else { StreamingMode::Signed };
            let signer = Signer::doc();
            let data: Vec<u8> = (0..sizes.iter().sum::<usize>()).map(|i| (i % 13) as u8 + b'a').collect();
            let mut chunks = Vec::new();
            let mut at = 0;
            for s in &sizes {
                chunks.push(&data[at..at + s]);
                at += s;
            }
            let mut crc = Checksum::for_trailer("x-amz-checksum-crc32").unwrap();
            crc.update(&data);
            let crc = crc.finish();
            let trailers = [("x-amz-checksum-crc32", crc.as_str())];
            let trailers = if mode.has_trailer() { &trailers[..] } else { &[] };
            let mut body = encode(mode, &signer, DOC_SEED, &chunks, trailers);
            for (at, kind, byte) in edits {
                let at = at % (body.len() + 1);
                match kind {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ if at < body.len() => { body.remove(at); }
                    _ => {}
                }
            }
            let declared: Vec<&str> = trailers.iter().map(|t| t.0).collect();
            let d = ChunkedDecoder::new(mode, Some(signer.context(DOC_SEED)), data.len() as u64, &declared, small_limits());
            let out = run(d, &body, &cuts);
            let got = out.data();
            prop_assert!(data.starts_with(&got));
            let mut boundary = 0;
            for c in &out.chunks {
                boundary += c.len();
                prop_assert!(
                    sizes.iter().scan(0, |s, x| { *s += x; Some(*s) }).any(|s| s == boundary),
                    "a chunk boundary the signer never made"
                );
            }
            if out.result.is_ok() {
                prop_assert_eq!(got, data);
            }
        }
    }
}

/// Decoding speed of a signed body (64 KiB chunks fed in 16 KiB pieces):
/// `cargo test --release -p ripstream-server decode_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn decode_throughput() {
    let signer = Signer::doc();
    let data = vec![7u8; 64 << 20];
    let chunks: Vec<&[u8]> = data.chunks(64 << 10).collect();
    let mut crc = Checksum::for_trailer("x-amz-checksum-crc32").unwrap();
    crc.update(&data);
    let crc = crc.finish();
    let with_crc = [("x-amz-checksum-crc32", crc.as_str())];
    for (mode, trailers) in [
        (StreamingMode::Signed, &[][..]),
        (StreamingMode::UnsignedTrailer, &[][..]),
        (StreamingMode::UnsignedTrailer, &with_crc[..]),
    ] {
        let body = Bytes::from(encode(mode, &signer, DOC_SEED, &chunks, trailers));
        let declared: Vec<&str> = trailers.iter().map(|t| t.0).collect();
        let mut d = ChunkedDecoder::new(
            mode,
            Some(signer.context(DOC_SEED)),
            data.len() as u64,
            &declared,
            Limits::default(),
        );
        let start = std::time::Instant::now();
        let mut total = 0;
        for piece in body.chunks(16 << 10) {
            d.feed(body.slice_ref(piece));
            while let Decoded::Data(b) = d.decode().unwrap() {
                total += b.len();
            }
        }
        d.end_of_input().unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(total, data.len());
        println!(
            "{mode:?} {declared:?}: {} MiB in {secs:.3} s = {:.0} MiB/s",
            data.len() >> 20,
            (data.len() >> 20) as f64 / secs
        );
    }
}

/// The trailer checksums against the catalogued check values of their CRCs
/// (the CRC of "123456789"), split across updates as chunks arrive.
#[test]
fn trailer_checksums_match_the_catalogued_check_values() {
    let check = |name: &str, expected: &[u8]| {
        let mut c = Checksum::for_trailer(name).unwrap();
        c.update(b"1234");
        c.update(b"56789");
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(c.finish(), b64.encode(expected), "{name}");
    };
    check("x-amz-checksum-crc32", &0xCBF4_3926u32.to_be_bytes());
    check("x-amz-checksum-crc32c", &0xE306_9283u32.to_be_bytes());
    check(
        "x-amz-checksum-crc64nvme",
        &0xAE8B_1486_0A79_9888u64.to_be_bytes(),
    );
}

#[tokio::test]
async fn what_the_decoder_holds_is_charged_as_it_grows() {
    use std::sync::{Arc, Mutex};
    // The documented body: a 64 KiB chunk, verified only once whole.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let collected = ChunkedBody::new(pieces(&doc_body(), 4096), doc_decoder(66_560))
        .holding(Box::new(move |held| {
            log.lock().unwrap().push(held);
            true
        }))
        .collect()
        .await
        .unwrap();
    assert_eq!(collected.to_bytes().len(), 66_560);
    let seen = seen.lock().unwrap().clone();
    // Charged while the chunk arrived, piece by piece, then given back.
    let most = seen.iter().copied().max().unwrap();
    assert!(most >= 65_536, "{most}");
    assert!(seen.iter().filter(|&&n| n > 0 && n < 65_536).count() > 4);
    assert!(seen.last().copied().unwrap() < 4096, "{seen:?}");
    // Refused holdings end the body before the chunk is whole.
    let e = ChunkedBody::new(pieces(&doc_body(), 4096), doc_decoder(66_560))
        .holding(Box::new(|held| held <= 32 * 1024))
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(e, ChunkedBodyError::Busy), "{e}");
}
