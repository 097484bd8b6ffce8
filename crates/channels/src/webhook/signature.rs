//! Standard Webhooks signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`,
//! sent as `webhook-signature: v1,<base64 MAC>` next to the `webhook-id` and
//! `webhook-timestamp` headers it covers.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header with the message id, which receivers use to drop duplicates.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header with the send time in Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header with one or more space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// An HMAC key decoded from a `whsec_<base64>` secret. `Debug` hides the key.
#[derive(Clone)]
pub struct SigningSecret {
    keyed_mac: HmacSha256,
}

/// Reason a secret string is not a valid `whsec_<base64>` secret. The reason
/// never contains the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("the secret does not start with `whsec_`")]
    MissingPrefix,
    #[error("the part after `whsec_` is not valid padded base64")]
    InvalidBase64,
    #[error("the key after `whsec_` is empty")]
    EmptyKey,
}

/// A `webhook-signature` header that contains no valid signature for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no `v1` signature in the webhook-signature header matches the request")]
pub struct SignatureMismatch;

impl SigningSecret {
    /// Decodes a `whsec_<base64>` secret.
    ///
    /// # Errors
    ///
    /// Returns [`SecretFormatError`] when the prefix is missing, the rest is
    /// not standard padded base64, or the decoded key is empty.
    pub fn parse(secret: &str) -> Result<SigningSecret, SecretFormatError> {
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretFormatError::MissingPrefix)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| SecretFormatError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretFormatError::EmptyKey);
        }
        // HMAC accepts keys of any length, so this error cannot occur.
        let keyed_mac =
            HmacSha256::new_from_slice(&key).map_err(|_| SecretFormatError::EmptyKey)?;
        Ok(SigningSecret { keyed_mac })
    }

    /// Computes the `webhook-signature` header value for one request.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac_of(message_id, &timestamp.to_string(), body);
        format!(
            "{SIGNATURE_VERSION},{}",
            BASE64.encode(mac.finalize().into_bytes())
        )
    }

    /// Checks a received request the way a receiver does: succeeds when any
    /// `v1` entry of `signature_header` matches, comparing in constant time.
    ///
    /// `timestamp` is the `webhook-timestamp` header as received. The caller
    /// is responsible for rejecting timestamps too far from its own clock.
    ///
    /// # Errors
    ///
    /// Returns [`SignatureMismatch`] when no entry matches.
    pub fn verify(
        &self,
        message_id: &str,
        timestamp: &str,
        body: &[u8],
        signature_header: &str,
    ) -> Result<(), SignatureMismatch> {
        for entry in signature_header.split_whitespace() {
            let Some((version, encoded)) = entry.split_once(',') else {
                continue;
            };
            if version != SIGNATURE_VERSION {
                continue;
            }
            let Ok(received) = BASE64.decode(encoded) else {
                continue;
            };
            if self
                .mac_of(message_id, timestamp, body)
                .verify_slice(&received)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(SignatureMismatch)
    }

    fn mac_of(&self, message_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed_mac.clone();
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference vector used by the test suites of Standard Webhooks libraries.
    // Python's `hmac` module computes the same signature for these inputs.
    const REFERENCE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const REFERENCE_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const REFERENCE_TIMESTAMP: i64 = 1614265330;
    const REFERENCE_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const REFERENCE_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn sign_matches_reference_vector() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();

        let signature = secret.sign(REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY);

        assert_eq!(signature, REFERENCE_SIGNATURE);
    }

    #[test]
    fn sign_matches_direct_hmac_computation() {
        let key = b"an-independent-test-key-of-32-b!";
        let secret = SigningSecret::parse(&format!("whsec_{}", BASE64.encode(key))).unwrap();
        let body = br#"{"type":"notification.welcome"}"#;

        let signature = secret.sign("0b3c6e1a-5d7f-4a2b-9c8d-1e2f3a4b5c6d", 1_700_000_000, body);

        let mut expected = HmacSha256::new_from_slice(key).unwrap();
        expected.update(b"0b3c6e1a-5d7f-4a2b-9c8d-1e2f3a4b5c6d.1700000000.");
        expected.update(body);
        let expected = format!("v1,{}", BASE64.encode(expected.finalize().into_bytes()));
        assert_eq!(signature, expected);
    }

    #[test]
    fn verify_accepts_reference_signature() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();

        let result = secret.verify(
            REFERENCE_ID,
            "1614265330",
            REFERENCE_BODY,
            REFERENCE_SIGNATURE,
        );

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn verify_rejects_tampered_body() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();

        let result = secret.verify(
            REFERENCE_ID,
            "1614265330",
            br#"{"test": 2432232315}"#,
            REFERENCE_SIGNATURE,
        );

        assert_eq!(result, Err(SignatureMismatch));
    }

    #[test]
    fn verify_rejects_changed_timestamp_and_id() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();

        let changed_timestamp = secret.verify(
            REFERENCE_ID,
            "1614265331",
            REFERENCE_BODY,
            REFERENCE_SIGNATURE,
        );
        let changed_id = secret.verify(
            "msg_other",
            "1614265330",
            REFERENCE_BODY,
            REFERENCE_SIGNATURE,
        );

        assert_eq!(changed_timestamp, Err(SignatureMismatch));
        assert_eq!(changed_id, Err(SignatureMismatch));
    }

    #[test]
    fn verify_rejects_other_secret() {
        let other = SigningSecret::parse("whsec_c2lnbmluZy1rZXktb2YtYW5vdGhlci10ZW5hbnQ=").unwrap();

        let result = other.verify(
            REFERENCE_ID,
            "1614265330",
            REFERENCE_BODY,
            REFERENCE_SIGNATURE,
        );

        assert_eq!(result, Err(SignatureMismatch));
    }

    #[test]
    fn verify_accepts_any_matching_entry() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();
        let header = format!("v2,AAAA v1,bm90LXRoZS1zaWduYXR1cmU= {REFERENCE_SIGNATURE}");

        let result = secret.verify(REFERENCE_ID, "1614265330", REFERENCE_BODY, &header);

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn parse_rejects_malformed_secrets() {
        let cases = [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretFormatError::MissingPrefix,
            ),
            ("whsec_not base64!", SecretFormatError::InvalidBase64),
            ("whsec_", SecretFormatError::EmptyKey),
        ];

        for (secret, expected) in cases {
            assert_eq!(
                SigningSecret::parse(secret).unwrap_err(),
                expected,
                "{secret}"
            );
        }
    }

    #[test]
    fn debug_hides_key() {
        let secret = SigningSecret::parse(REFERENCE_SECRET).unwrap();

        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
    }
}
