//! Compiled artifacts shared through the registry: the replica that takes
//! an upload has compiled it already, and the others of the same image load
//! its artifact (milliseconds) instead of compiling again (hundreds of
//! milliseconds), so a rollout reaches the fleet in about one compile.
//!
//! An artifact is native code, so it is loaded only when its HMAC-SHA256,
//! keyed with the fleet's admin token (which the database does not hold),
//! proves a replica of this fleet made it for exactly these bytes. wasmtime
//! then refuses one from another engine version or configuration, and the
//! replica compiles instead.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a fleet signs its artifacts with: HMAC keyed with `ADMIN_TOKEN`.
#[derive(Clone)]
pub struct ArtifactKey(Hmac<Sha256>);

impl ArtifactKey {
    /// `None` only if HMAC refused the key, which it does for no length.
    pub fn new(admin_token: &str) -> Option<ArtifactKey> {
        <Hmac<Sha256> as Mac>::new_from_slice(admin_token.as_bytes()).ok().map(ArtifactKey)
    }

    fn mac(&self, name: &str, digest: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [b"petstore artifact\0".as_slice(), name.as_bytes(), b"\0", digest.as_bytes(), b"\0", artifact] {
            mac.update(part);
        }
        mac
    }

    /// The MAC to store beside `artifact`, hex.
    pub fn sign(&self, name: &str, digest: &str, artifact: &[u8]) -> String {
        self.mac(name, digest, artifact).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `mac` (hex) is this fleet's for `artifact` of `name`'s `digest`
    /// (compared in constant time).
    pub fn verify(&self, name: &str, digest: &str, artifact: &[u8], mac: &str) -> bool {
        let Some(expected) = hex(mac) else { return false };
        self.mac(name, digest, artifact).verify_slice(&expected).is_ok()
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fleets_key_and_the_exact_artifact_verify() {
        let key = ArtifactKey::new("token").expect("key");
        let mac = key.sign("pets", "abc", b"code");
        assert!(key.verify("pets", "abc", b"code", &mac));
        assert!(!key.verify("pets", "abc", b"other code", &mac));
        assert!(!key.verify("pets", "abd", b"code", &mac), "another version's");
        assert!(!key.verify("orders", "abc", b"code", &mac), "another component's");
        assert!(!ArtifactKey::new("other token").expect("key").verify("pets", "abc", b"code", &mac));
        assert!(!key.verify("pets", "abc", b"code", "zz"));
    }
}
