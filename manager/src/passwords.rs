//! Argon2id password hashing, always on the blocking pool so a login never stalls
//! the async workers. Verifying against an unknown user still runs one full
//! verification (against a dummy hash), so response time does not reveal which
//! usernames exist.

use std::sync::OnceLock;

use anyhow::Context;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

use crate::error::ApiError;

pub const MIN_PASSWORD_LEN: usize = 8;
/// Longer inputs are refused before hashing: argon2 cost grows with input size.
pub const MAX_PASSWORD_LEN: usize = 1024;

pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("the password must be at least {MIN_PASSWORD_LEN} characters long"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "invalid_password",
            format!("the password must be at most {MAX_PASSWORD_LEN} bytes long"),
        ));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("skiff-dummy-password").unwrap_or_default())
}

pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .context("password hashing task")
        .and_then(|r| r)
        .map_err(ApiError::Internal)
}

/// True when `password` matches `hash`. With no hash (unknown user), spends the
/// same work on a dummy and returns false.
pub async fn verify(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match hash {
        Some(h) => verify_blocking(&password, &h),
        None => {
            let _ = verify_blocking(&password, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// Computes the dummy hash ahead of the first login.
pub async fn warm_up() {
    let _ = tokio::task::spawn_blocking(dummy_hash).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse!".into(), Some(h)).await);
        assert!(!verify("anything".into(), None).await);
    }
}
