//! Signed components: minisign signatures (Ed25519, the `.minisig` format
//! the `minisign` tool writes), checked against the public key the service
//! is configured with. An upload carries its signature file base64-encoded
//! in the `X-Component-Signature` header.

use base64::Engine as _;
use minisign_verify::{PublicKey, Signature};
use thiserror::Error;

/// Whether component bytes must be signed.
#[derive(Clone)]
pub enum SignaturePolicy {
    /// Every version must carry a valid signature by this key (or be one
    /// of the image's own components).
    Required(Box<PublicKey>),
    /// No key configured: anything is accepted (development only).
    Unchecked,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the component is not signed: send its minisign signature, base64-encoded, in X-Component-Signature")]
    Missing,
    #[error("the signature cannot be read: {0}")]
    Malformed(String),
    #[error("the signature does not verify with the configured key: {0}")]
    Invalid(String),
}

impl SignaturePolicy {
    /// The policy for `COMPONENT_PUBLIC_KEY`: a minisign public key, either
    /// its base64 line or the whole `.pub` file.
    pub fn from_key(key: Option<&str>) -> Result<SignaturePolicy, String> {
        let Some(key) = key else { return Ok(SignaturePolicy::Unchecked) };
        let line = key.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"));
        let parsed = line.map(PublicKey::from_base64).ok_or("no key in it")?;
        Ok(SignaturePolicy::Required(Box::new(parsed.map_err(|e| format!("not a minisign public key: {e}"))?)))
    }

    pub fn is_required(&self) -> bool {
        matches!(self, SignaturePolicy::Required(_))
    }

    /// Check `bytes` against `signature` (the `.minisig` text).
    pub fn verify(&self, bytes: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
        let SignaturePolicy::Required(key) = self else { return Ok(()) };
        let text = signature.ok_or(SignatureError::Missing)?;
        let signature = Signature::decode(text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        key.verify(bytes, &signature, false).map_err(|e| SignatureError::Invalid(e.to_string()))
    }
}

/// The `.minisig` text carried base64-encoded in a header.
pub fn from_header(value: &str) -> Result<String, SignatureError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| SignatureError::Malformed(format!("not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| SignatureError::Malformed("not text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair and a signature made with the `minisign` tool's format.
    fn signed(bytes: &[u8]) -> (String, String) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
        let signature =
            minisign::sign(Some(&pair.pk), &pair.sk, std::io::Cursor::new(bytes), None, None).expect("signature");
        (pair.pk.to_base64(), signature.to_string())
    }

    #[test]
    fn only_the_configured_key_signs() {
        let (key, signature) = signed(b"component");
        let policy = SignaturePolicy::from_key(Some(&key)).expect("key");
        assert_eq!(policy.verify(b"component", Some(&signature)), Ok(()));
        assert!(matches!(policy.verify(b"tampered", Some(&signature)), Err(SignatureError::Invalid(_))));
        assert_eq!(policy.verify(b"component", None), Err(SignatureError::Missing));
        let (_, other) = signed(b"component");
        assert!(matches!(policy.verify(b"component", Some(&other)), Err(SignatureError::Invalid(_))));
        assert!(matches!(policy.verify(b"component", Some("junk")), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn keys_are_read_as_a_line_or_a_pub_file_and_junk_is_refused() {
        let (key, _) = signed(b"x");
        let file = format!("untrusted comment: minisign public key\n{key}\n");
        assert!(SignaturePolicy::from_key(Some(&file)).expect("file").is_required());
        assert!(SignaturePolicy::from_key(Some("not a key")).is_err());
        assert!(!SignaturePolicy::from_key(None).expect("none").is_required());
    }
}
