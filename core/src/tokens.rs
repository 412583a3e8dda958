//! JWT access tokens: HS256 only, with `sub` (username), `uid` (user id), `gen`
//! (the user's token generation), `iat` and `exp`. A token is valid only while
//! the user with that id still exists and its generation is unchanged, so
//! `revoke-tokens` (which bumps the generation) invalidates every earlier token.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub uid: i64,
    pub r#gen: i64,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes long")]
    SecretTooShort,
    #[error("the token is invalid")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("could not sign a token")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(secret: &Secret, ttl_secs: i64) -> Result<Self, TokenError> {
        let bytes = secret.expose().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TokenError::SecretTooShort);
        }
        // Only HS256: a token naming any other algorithm (none, RS256, …) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            ttl_secs,
        })
    }

    /// Signs a token for the user; returns it with its expiry (Unix seconds).
    pub fn issue(
        &self,
        username: &str,
        uid: i64,
        generation: i64,
        now_secs: i64,
    ) -> Result<(String, i64), TokenError> {
        let claims = Claims {
            sub: username.to_owned(),
            uid,
            r#gen: generation,
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
        };
        self.sign(&claims).map(|t| (t, claims.exp))
    }

    /// Signs arbitrary claims (also used by tests to make expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(TokenError::Signing)
    }

    /// Checks signature, algorithm and expiry. Whether the user and generation
    /// still match is the caller's job, since that needs the store.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> TokenKeys {
        TokenKeys::new(&Secret::new(s), 3600).unwrap()
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(matches!(
            TokenKeys::new(&Secret::new("short"), 60),
            Err(TokenError::SecretTooShort)
        ));
    }

    #[test]
    fn round_trip_and_foreign_key() {
        let a = keys(&"a".repeat(32));
        let b = keys(&"b".repeat(32));
        let now = chrono::Utc::now().timestamp();
        let (t, exp) = a.issue("alice", 7, 3, now).unwrap();
        assert_eq!(exp, now + 3600);
        let c = a.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.uid, c.r#gen), ("alice", 7, 3));
        assert!(b.verify(&t).is_err());
    }

    #[test]
    fn expired_and_alg_none_are_refused() {
        let a = keys(&"a".repeat(32));
        let now = chrono::Utc::now().timestamp();
        let expired = a
            .sign(&Claims {
                sub: "alice".into(),
                uid: 1,
                r#gen: 0,
                iat: now - 7200,
                exp: now - 3600,
            })
            .unwrap();
        assert!(a.verify(&expired).is_err());
        // header {"alg":"none","typ":"JWT"} with a valid-looking payload and no signature
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            b64(&format!(
                r#"{{"sub":"alice","uid":1,"gen":0,"iat":{now},"exp":{}}}"#,
                now + 100
            ))
        );
        assert!(a.verify(&none).is_err());
    }

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            let k = chunk.len() + 1;
            for i in 0..k {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
