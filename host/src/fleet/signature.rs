//! Signed components: minisign signatures (Ed25519, the `.minisig` format
//! the `minisign` tool writes), checked against the public key the service
//! is configured with. An upload carries its signature file base64-encoded
//! in the `X-Component-Signature` header.
//!
//! A signature binds more than the bytes: its trusted comment (signed too)
//! says which component the bytes are, for which environment, and their
//! version, and all three are checked:
//!
//! ```sh
//! minisign -S -s petstore.key -m pets.wasm \
//!   -t "petstore component=pets environment=production version=42"
//! ```

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

/// What a valid signature's trusted comment says of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub component: String,
    pub environment: String,
    /// Increases with every build the pipeline signs.
    pub version: i64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the component is not signed: send its minisign signature, base64-encoded, in X-Component-Signature")]
    Missing,
    #[error("the signature cannot be read: {0}")]
    Malformed(String),
    #[error("the signature does not verify with the configured key: {0}")]
    Invalid(String),
    #[error(
        "the signature's trusted comment must say component=NAME environment=ENV version=N \
         (minisign -t \"petstore component=… environment=… version=…\"): {0}"
    )]
    Claims(String),
    #[error("the signature is for {claimed}, not {expected}")]
    WrongTarget { claimed: String, expected: String },
    #[error("version {version} is older than {highest}, the newest activated; roll back to a stored version instead")]
    Older { version: i64, highest: i64 },
    #[error("version {version} was signed for other bytes; a version names one build")]
    Reused { version: i64 },
}

impl SignaturePolicy {
    /// The policy for `COMPONENT_PUBLIC_KEY`: with a key, every upload must
    /// be signed with it.
    pub fn from_key(key: Option<PublicKey>) -> SignaturePolicy {
        key.map_or(SignaturePolicy::Unchecked, |key| SignaturePolicy::Required(Box::new(key)))
    }

    pub fn is_required(&self) -> bool {
        matches!(self, SignaturePolicy::Required(_))
    }

    /// Check `bytes` against `signature` (the `.minisig` text), and that its
    /// trusted comment names `component` and `environment`: what the
    /// signature says of them, or `None` when nothing is checked.
    pub fn verify(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        component: &str,
        environment: &str,
    ) -> Result<Option<Claims>, SignatureError> {
        let SignaturePolicy::Required(key) = self else { return Ok(None) };
        let text = signature.ok_or(SignatureError::Missing)?;
        let signature = Signature::decode(text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        key.verify(bytes, &signature, false).map_err(|e| SignatureError::Invalid(e.to_string()))?;
        let claims = Claims::read(signature.trusted_comment())?;
        for (claimed, expected) in [(&claims.component, component), (&claims.environment, environment)] {
            if claimed != expected {
                return Err(SignatureError::WrongTarget { claimed: claimed.clone(), expected: expected.into() });
            }
        }
        Ok(Some(claims))
    }
}

impl Claims {
    /// `… component=pets environment=production version=42 …` (other words
    /// may stand around them, e.g. minisign's timestamp).
    fn read(comment: &str) -> Result<Claims, SignatureError> {
        let value = |key: &str| {
            comment.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
        };
        let missing = || SignatureError::Claims(format!("it says {comment:?}"));
        let version = value("version").ok_or_else(missing)?;
        Ok(Claims {
            component: value("component").ok_or_else(missing)?,
            environment: value("environment").ok_or_else(missing)?,
            version: version
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| SignatureError::Claims(format!("version {version:?} is not a whole number")))?,
        })
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
    fn signed(bytes: &[u8], comment: &str) -> (PublicKey, String) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
        let signature = minisign::sign(Some(&pair.pk), &pair.sk, std::io::Cursor::new(bytes), Some(comment), None)
            .expect("signature");
        (PublicKey::from_base64(&pair.pk.to_base64()).expect("key"), signature.to_string())
    }

    const PETS_7: &str = "petstore component=pets environment=production version=7";

    #[test]
    fn only_the_configured_key_signs() {
        let (key, signature) = signed(b"component", PETS_7);
        let policy = SignaturePolicy::from_key(Some(key));
        let verify = |bytes: &[u8], signature: Option<&str>| policy.verify(bytes, signature, "pets", "production");
        let claims = Claims { component: "pets".into(), environment: "production".into(), version: 7 };
        assert_eq!(verify(b"component", Some(&signature)), Ok(Some(claims)));
        assert!(matches!(verify(b"tampered", Some(&signature)), Err(SignatureError::Invalid(_))));
        assert_eq!(verify(b"component", None), Err(SignatureError::Missing));
        let (_, other) = signed(b"component", PETS_7);
        assert!(matches!(verify(b"component", Some(&other)), Err(SignatureError::Invalid(_))));
        assert!(matches!(verify(b"component", Some("junk")), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn the_trusted_comment_binds_the_component_and_the_environment() {
        let (key, signature) = signed(b"component", PETS_7);
        let policy = SignaturePolicy::from_key(Some(key));
        let wrong = |component, environment| policy.verify(b"component", Some(&signature), component, environment);
        assert!(matches!(wrong("orders", "production"), Err(SignatureError::WrongTarget { .. })));
        assert!(matches!(wrong("pets", "staging"), Err(SignatureError::WrongTarget { .. })));
        for comment in [
            "timestamp:1 file:pets.wasm",
            "component=pets environment=production",
            "component=pets environment=production version=-1",
            "component=pets environment=production version=x",
        ] {
            let (key, signature) = signed(b"c", comment);
            let policy = SignaturePolicy::from_key(Some(key));
            let verdict = policy.verify(b"c", Some(&signature), "pets", "production");
            assert!(matches!(verdict, Err(SignatureError::Claims(_))), "{comment}: {verdict:?}");
        }
    }

    #[test]
    fn without_a_key_nothing_is_checked() {
        let (key, _) = signed(b"x", PETS_7);
        assert!(SignaturePolicy::from_key(Some(key)).is_required());
        assert!(!SignaturePolicy::from_key(None).is_required());
        assert_eq!(SignaturePolicy::from_key(None).verify(b"x", None, "pets", "production"), Ok(None));
    }
}
