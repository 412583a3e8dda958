//! Function secrets at rest: AES-256-GCM under the operator's `SKIFF_SECRETS_KEY`.
//!
//! A sealed value is `v1` ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag. The
//! associated data names the function id and the secret's name, so a sealed
//! value copied into another function's row (or under another name) does not
//! open: the database alone cannot move a secret between tenants.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

const VERSION: &[u8; 2] = b"v1";
const NONCE_LEN: usize = 12;
/// What the key check seals (see `KeyCheck`).
const CHECK_PLAINTEXT: &[u8] = b"skiff secrets key check";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error(
        "SKIFF_SECRETS_KEY must be 32 bytes, written as 64 hex digits or in base64 \
         (e.g. the output of `openssl rand -hex 32`)"
    )]
    BadKey,
    /// Wrong key, wrong function or name, or a damaged value. Deliberately
    /// says nothing more (it is never the plaintext's business to leak here).
    #[error("a sealed secret did not open: the key differs or the value is damaged")]
    DoesNotOpen,
}

/// The 32-byte key. Never printed.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: Aes256Gcm,
    fingerprint: [u8; 4],
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

impl SecretsKey {
    /// Parses a key written as 64 hex digits or as base64 (standard or URL-safe,
    /// padded or not) of exactly 32 bytes. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| SecretsError::BadKey)?
        } else {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|e| e.decode(t).ok())
                .ok_or(SecretsError::BadKey)?
        };
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretsError> {
        if bytes.len() != 32 {
            return Err(SecretsError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| SecretsError::BadKey)?;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
        let mut fingerprint = [0; 4];
        fingerprint.copy_from_slice(&digest[..4]);
        Ok(Self {
            cipher,
            fingerprint,
        })
    }

    /// A fresh random key, as hex (what `skiff dev` keeps in its data dir).
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Eight hex digits of the key's SHA-256: safe to log, tells keys apart.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// Seals `plaintext` as secret `name` of function `function_id`.
    pub fn seal(&self, function_id: i64, name: &str, plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(&aad(function_id, name), plaintext)
    }

    /// Opens what `seal` sealed for the same function and name.
    pub fn open(
        &self,
        function_id: i64,
        name: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SecretsError> {
        self.open_with(&aad(function_id, name), sealed)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and a 12-byte nonce cannot fail for
        // inputs below GCM's 64 GiB bound; values are capped far below it.
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(VERSION.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let rest = sealed
            .strip_prefix(VERSION.as_slice())
            .ok_or(SecretsError::DoesNotOpen)?;
        if rest.len() < NONCE_LEN + 16 {
            return Err(SecretsError::DoesNotOpen);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretsError::DoesNotOpen)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SecretsError::DoesNotOpen)
    }

    /// A known value sealed under this key, stored once so a later start with
    /// another key is caught before anything is served.
    pub fn key_check(&self) -> Vec<u8> {
        self.seal_with(b"skiff:key-check", CHECK_PLAINTEXT)
    }

    /// Whether `sealed` (from `key_check`) was sealed under this key.
    pub fn matches_key_check(&self, sealed: &[u8]) -> bool {
        self.open_with(b"skiff:key-check", sealed)
            .is_ok_and(|p| p == CHECK_PLAINTEXT)
    }
}

fn aad(function_id: i64, name: &str) -> Vec<u8> {
    format!("skiff:secret:v1:function={function_id}:name={name}").into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::parse(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let k = key();
        let sealed = k.seal(7, "API_KEY", b"hunter2-hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open(7, "API_KEY", &sealed).unwrap(), b"hunter2-hunter2");
        // A fresh nonce each time.
        assert_ne!(sealed, k.seal(7, "API_KEY", b"hunter2-hunter2"));
    }

    #[test]
    fn does_not_open_for_another_function_name_or_key() {
        let k = key();
        let sealed = k.seal(7, "API_KEY", b"v");
        assert_eq!(
            k.open(8, "API_KEY", &sealed),
            Err(SecretsError::DoesNotOpen)
        );
        assert_eq!(k.open(7, "OTHER", &sealed), Err(SecretsError::DoesNotOpen));
        let other = SecretsKey::parse(&"cd".repeat(32)).unwrap();
        assert_eq!(
            other.open(7, "API_KEY", &sealed),
            Err(SecretsError::DoesNotOpen)
        );
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert_eq!(
            k.open(7, "API_KEY", &flipped),
            Err(SecretsError::DoesNotOpen)
        );
        assert_eq!(
            k.open(7, "API_KEY", b"v1short"),
            Err(SecretsError::DoesNotOpen)
        );
    }

    #[test]
    fn parses_hex_and_base64_and_refuses_other_lengths() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xab; 32]);
        assert_eq!(
            SecretsKey::parse(&b64).unwrap().fingerprint(),
            key().fingerprint()
        );
        assert!(SecretsKey::parse(&format!(" {}\n", "AB".repeat(32))).is_ok());
        assert_eq!(SecretsKey::parse("abcd").err(), Some(SecretsError::BadKey));
        assert_eq!(
            SecretsKey::parse(&"ab".repeat(31)).err(),
            Some(SecretsError::BadKey)
        );
        assert_eq!(SecretsKey::parse("").err(), Some(SecretsError::BadKey));
        assert_eq!(format!("{:?}", key()), "SecretsKey(***)");
    }

    #[test]
    fn the_key_check_tells_keys_apart() {
        let check = key().key_check();
        assert!(key().matches_key_check(&check));
        assert!(
            !SecretsKey::parse(&"cd".repeat(32))
                .unwrap()
                .matches_key_check(&check)
        );
        assert_eq!(SecretsKey::generate_hex().len(), 64);
    }
}
