//! Authentication of incoming requests: a bearer token, and optionally a Standard Webhooks
//! signature (<https://www.standardwebhooks.com/>) over the exact body.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use vouch_config::Secret;

/// Signatures older or newer than this are refused, so a captured request cannot be replayed later.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 5 * 60;

/// Compares `Authorization: Bearer <token>` with the configured token in constant time.
pub fn bearer_matches(header: Option<&str>, token: &Secret) -> bool {
    let Some(presented) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
        return false;
    };
    let presented = presented.trim().as_bytes();
    let expected = token.expose().as_bytes();
    // Lengths are compared in the open: the token's length is not the secret.
    presented.len() == expected.len() && bool::from(presented.ct_eq(expected))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request must carry webhook-id, webhook-timestamp and webhook-signature headers")]
    Missing,
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from now; the request may be replayed")]
    Stale,
    #[error("no webhook-signature matches the body")]
    Mismatch,
}

/// The key of a `whsec_<base64>` secret.
fn key_of(secret: &Secret) -> Vec<u8> {
    let encoded = secret.expose().strip_prefix("whsec_").unwrap_or(secret.expose());
    BASE64.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks the signature headers against any of the secrets (several while one is rotated out).
pub fn verify_signature(
    secrets: &[Secret],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_seconds: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(SignatureError::Missing);
    };
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now_seconds - timestamp).abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let expected = sign(secret, id, timestamp, body);
        let expected = expected.as_bytes();
        let matched = signatures
            .split(' ')
            .filter(|candidate| candidate.starts_with("v1,"))
            .any(|candidate| candidate.len() == expected.len() && bool::from(candidate.as_bytes().ct_eq(expected)));
        if matched {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}
