//! Bearer tokens: JWTs encrypted with JWE (A256KW key wrap, A256GCM content) under the cluster
//! secret, so that a token reveals nothing and cannot be forged or altered.

use std::collections::HashSet;

use jwt_simple::prelude::*;
use serde::{Deserialize, Serialize};

/// Issuer written into and required of every token.
pub const ISSUER: &str = "dora";
/// Clock skew tolerated when checking expiry and issue time.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// The current Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// What a token carries besides the standard claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Zone used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Workspace used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// A node credential: it may only register and report for this node of `zone`, and read
    /// the containers bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A join token: it may only obtain a node credential for a new node of `zone`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub subject: String,
    pub token_id: String,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires: u64,
    pub claims: TokenClaims,
}

/// A newly minted token.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub user: String,
    pub id: String,
    /// Unix seconds.
    pub expires: u64,
}

/// Encrypts and decrypts tokens with the cluster secret.
#[derive(Clone)]
pub struct TokenKey {
    key: A256KWKey,
}

impl TokenKey {
    /// A key from the 32-byte cluster secret.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Self> {
        let key = A256KWKey::from_bytes(secret)
            .map_err(|e| anyhow::anyhow!("the cluster secret must be 32 bytes: {e}"))?;
        Ok(TokenKey { key })
    }

    /// A fresh random 32-byte cluster secret.
    pub fn generate_secret() -> Vec<u8> {
        A256KWKey::generate().to_bytes()
    }

    /// Mints a token for `subject` valid for `valid_for`.
    pub fn issue(
        &self,
        subject: &str,
        valid_for: std::time::Duration,
        claims: TokenClaims,
    ) -> anyhow::Result<IssuedToken> {
        let id = uuid::Uuid::new_v4().to_string();
        let jwt = Claims::with_custom_claims(claims, Duration::from_secs(valid_for.as_secs()))
            .with_issuer(ISSUER)
            .with_subject(subject)
            .with_jwt_id(&id);
        let expires = jwt.expires_at.map(|t| t.as_secs()).unwrap_or_default();
        let token = self
            .key
            .encrypt(jwt)
            .map_err(|e| anyhow::anyhow!("cannot encrypt the token: {e}"))?;
        Ok(IssuedToken {
            token,
            user: subject.to_string(),
            id,
            expires,
        })
    }

    /// Decrypts and checks a token: issuer, issue time, expiry, subject and id must all be
    /// present.
    pub fn verify(&self, token: &str) -> Option<VerifiedToken> {
        let options = DecryptionOptions {
            claim_options: Some(VerificationOptions {
                allowed_issuers: Some(HashSet::from([ISSUER.to_string()])),
                time_tolerance: Some(Duration::from_secs(LEEWAY_SECS)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let claims = self
            .key
            .decrypt_token::<TokenClaims>(token, Some(options))
            .ok()?;
        Some(VerifiedToken {
            subject: claims.subject?,
            token_id: claims.jwt_id?,
            issued_at: claims.issued_at?.as_secs(),
            expires: claims.expires_at?.as_secs(),
            claims: claims.custom,
        })
    }
}

/// Tokens already decrypted, so that a client's every request does not pay for key unwrapping
/// and decryption again. Expiry is still checked on every use; a full cache is simply emptied.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    cache: std::sync::Mutex<std::collections::HashMap<String, VerifiedToken>>,
}

const CACHED_TOKENS: usize = 10_000;

impl VerifiedTokens {
    /// `key.verify(token)`, remembered until the token expires.
    pub fn verify(&self, key: &TokenKey, token: &str) -> Option<VerifiedToken> {
        let now = now_secs();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(token) {
            if hit.expires + LEEWAY_SECS > now {
                return Some(hit.clone());
            }
            cache.remove(token);
            return None;
        }
        drop(cache);
        let verified = key.verify(token)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHED_TOKENS {
            cache.clear();
        }
        cache.insert(token.to_string(), verified.clone());
        Some(verified)
    }

    /// The token of the request's `Authorization: Bearer` header, verified: `None` without
    /// that header, 401 when it is malformed or the token does not verify.
    pub fn bearer(
        &self,
        key: &TokenKey,
        headers: &axum::http::HeaderMap,
    ) -> Option<Result<VerifiedToken, crate::ApiError>> {
        let header = headers.get(axum::http::header::AUTHORIZATION)?;
        let Some(token) = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) else {
            return Some(Err(crate::ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )));
        };
        Some(
            self.verify(key, token.trim())
                .ok_or_else(|| crate::ApiError::unauthorized("invalid or expired token")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_secret(&[byte; 32]).unwrap()
    }

    #[test]
    fn round_trip_keeps_subject_and_defaults() {
        let claims = TokenClaims {
            zone: Some("z1".into()),
            workspace: Some("ws".into()),
            node: None,
            join: false,
        };
        let issued = key(1)
            .issue("alice", std::time::Duration::from_secs(60), claims.clone())
            .unwrap();
        assert_eq!(
            issued.token.split('.').count(),
            5,
            "compact JWE has five parts"
        );
        let verified = key(1).verify(&issued.token).unwrap();
        assert_eq!(verified.subject, "alice");
        assert_eq!(verified.token_id, issued.id);
        assert_eq!(verified.expires, issued.expires);
        assert!(verified.issued_at + 60 >= verified.expires && verified.issued_at <= now_secs());
        assert_eq!(verified.claims, claims);
    }

    #[test]
    fn other_keys_garbage_and_tampering_are_refused() {
        let issued = key(1)
            .issue(
                "alice",
                std::time::Duration::from_secs(60),
                TokenClaims::default(),
            )
            .unwrap();
        assert!(key(2).verify(&issued.token).is_none());
        assert!(key(1).verify("garbage").is_none());
        let mut tampered = issued.token.into_bytes();
        let middle = tampered.len() / 2;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        assert!(
            key(1)
                .verify(std::str::from_utf8(&tampered).unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_payload_is_not_readable() {
        let issued = key(1)
            .issue(
                "alice-the-admin",
                std::time::Duration::from_secs(60),
                TokenClaims::default(),
            )
            .unwrap();
        let text = issued.token.to_lowercase();
        assert!(!text.contains("alice"));
    }
}
