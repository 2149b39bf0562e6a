//! The embedded object store and the S3 API subset.
//!
//! [`Objects`] keeps buckets as directories and objects as plain files
//! under `<data-dir>/objects/` (see [`store`] for the layout), so a file
//! another in-process writer (the Firehose delivery engine) puts there with
//! object_store's LocalFileSystem is an object S3 clients list and read.
//! [`S3Api`] serves the S3 operations over it through the front door,
//! which speaks restXml on the server's one port.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let objects = ripstream_objects::Objects::open(dir.path()).unwrap();
//! objects.create_bucket("deliveries").unwrap();
//! let info = objects
//!     .put_object("deliveries", "2026/12/03/x", bytes::Bytes::from_static(b"hello"))
//!     .await
//!     .unwrap();
//! assert_eq!(info.etag, "\"5d41402abc4b2a76b9719d911017c592\"");
//! assert!(dir.path().join("objects/deliveries/2026/12/03/x").is_file());
//! # }
//! ```

pub mod api;
pub mod error;
pub mod store;

pub use api::S3Api;
pub use error::ObjectsError;
pub use store::{AES256, AWS_KMS, Encryption, ObjectInfo, Objects, OpenObject, PutOptions, Sse};

/// The vendored botocore model of S3 (2006-03-01), its documentation
/// strings left out: every operation is kept so that a request for one
/// Ripstream does not serve is routed to it and answered NotImplemented,
/// never mistaken for another operation of the same path.
pub static MODEL: &str = include_str!("../model/s3-2006-03-01.json");
