//! Stream encryption (StartStreamEncryption, StopStreamEncryption) on the
//! keyring of [`ripstream_keyring`], and the KMS errors AWS sends for key
//! failures.

use ripstream_keyring::KeyringError;
use ripstream_log::CipherError;

pub use ripstream_keyring::{KeyEntry, Keyring, MANAGED_ALIAS};

use crate::{Error, Result};

impl From<KeyringError> for Error {
    fn from(e: KeyringError) -> Error {
        match e {
            KeyringError::NotFound(m) => Error::KmsNotFound(m),
            KeyringError::Disabled(m) => Error::KmsDisabled(m),
            KeyringError::File {
                message,
                source: Some(source),
            } => Error::Failed { message, source },
            KeyringError::File { message, .. } => Error::Internal(message),
        }
    }
}

/// Maps a cipher failure to the KMS error AWS would send.
pub(crate) fn cipher_error(e: &CipherError) -> Error {
    match e {
        CipherError::KeyNotFound(k) => Error::KmsNotFound(format!("Key '{k}' does not exist")),
        CipherError::KeyDisabled(k) => Error::KmsDisabled(format!("Key '{k}' is disabled.")),
        CipherError::Undecryptable(k) => Error::KmsAccessDenied(format!(
            "The ciphertext refers to a key that does not match key '{k}' of the keyring, or the data was altered."
        )),
        CipherError::Malformed(m) => Error::KmsInvalidState(m.clone()),
    }
}

impl crate::Service {
    /// StartStreamEncryption: records written from now on are encrypted under the key.
    pub async fn start_stream_encryption(
        &self,
        input: crate::types::StreamEncryptionInput,
    ) -> Result<crate::types::Empty> {
        let inner = self.inner();
        if input.encryption_type != crate::types::EncryptionType::Kms {
            return Err(Error::InvalidArgument(format!(
                "EncryptionType {} is not valid to start encryption; use KMS.",
                input.encryption_type
            )));
        }
        let resolved = inner.keyring.resolve(&input.key_id)?;
        let delay = inner.cfg.update_delay.as_millis() as i64;
        let now = inner.now_ms();
        inner
            .mutate(&input.stream, false, |rec, _| {
                rec.encryption = Some(ripstream_meta::Encryption {
                    key_id: input.key_id.clone(),
                    resolved_key_id: resolved.clone(),
                });
                if delay > 0 {
                    rec.status = ripstream_meta::StreamStatus::Updating;
                    rec.status_until_ms = now + delay;
                }
                Ok(())
            })
            .await?;
        Ok(crate::types::Empty {})
    }

    /// StopStreamEncryption: records written from now on are stored in the clear;
    /// those written before stay encrypted and readable.
    pub async fn stop_stream_encryption(
        &self,
        input: crate::types::StreamEncryptionInput,
    ) -> Result<crate::types::Empty> {
        let inner = self.inner();
        if input.encryption_type != crate::types::EncryptionType::Kms {
            return Err(Error::InvalidArgument(format!(
                "EncryptionType {} is not valid to stop encryption; use KMS.",
                input.encryption_type
            )));
        }
        let delay = inner.cfg.update_delay.as_millis() as i64;
        let now = inner.now_ms();
        inner
            .mutate(&input.stream, false, |rec, _| {
                if rec.encryption.is_some() {
                    rec.encryption = None;
                    if delay > 0 {
                        rec.status = ripstream_meta::StreamStatus::Updating;
                        rec.status_until_ms = now + delay;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(crate::types::Empty {})
    }
}
