//! The key that vouches for compiled components. An artifact is native
//! code: a replica loads one, from the registry (another replica of the
//! fleet compiled it) or from its own cache, only when its HMAC-SHA256 under
//! this key proves that a replica holding the key made it, for exactly
//! that component's bytes. The key is 256 random bits of its own
//! (`COMPONENT_ARTIFACT_KEY`), never the admin token, and the database does
//! not hold it: whoever can write the registry cannot forge an artifact.
//! wasmtime then also refuses an artifact of another engine version or
//! configuration, and the replica compiles instead.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The MAC's length in bytes.
pub const MAC_LEN: usize = 32;

#[derive(Clone)]
pub struct ArtifactKey(Hmac<Sha256>);

impl ArtifactKey {
    /// The fleet's key (the configuration has checked its length).
    pub fn new(key: &[u8]) -> ArtifactKey {
        ArtifactKey(
            <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    /// A key of this process's own, for a cache that only it will read.
    pub fn random() -> Result<ArtifactKey, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(ArtifactKey::new(&key))
    }

    fn mac(&self, name: &str, digest: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in [b"petstore artifact\0".as_slice(), name.as_bytes(), b"\0", digest.as_bytes(), b"\0", artifact] {
            mac.update(part);
        }
        mac
    }

    /// The MAC of `artifact`, made for `name`'s version `digest`.
    pub fn sign(&self, name: &str, digest: &str, artifact: &[u8]) -> [u8; MAC_LEN] {
        self.mac(name, digest, artifact).finalize().into_bytes().into()
    }

    /// The MAC as hex, as the registry stores it.
    pub fn sign_hex(&self, name: &str, digest: &str, artifact: &[u8]) -> String {
        self.sign(name, digest, artifact).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `mac` is this key's for `artifact` of `name`'s `digest`
    /// (compared in constant time).
    pub fn verify(&self, name: &str, digest: &str, artifact: &[u8], mac: &[u8]) -> bool {
        self.mac(name, digest, artifact).verify_slice(mac).is_ok()
    }

    /// [`ArtifactKey::verify`] for a MAC in hex.
    pub fn verify_hex(&self, name: &str, digest: &str, artifact: &[u8], mac: &str) -> bool {
        hex(mac).is_some_and(|mac| self.verify(name, digest, artifact, &mac))
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
        let key = ArtifactKey::new(&[7; 32]);
        let mac = key.sign_hex("pets", "abc", b"code");
        assert!(key.verify_hex("pets", "abc", b"code", &mac));
        assert!(!key.verify_hex("pets", "abc", b"other code", &mac));
        assert!(!key.verify_hex("pets", "abd", b"code", &mac), "another version's");
        assert!(!key.verify_hex("orders", "abc", b"code", &mac), "another component's");
        assert!(!ArtifactKey::new(&[8; 32]).verify_hex("pets", "abc", b"code", &mac), "another fleet's key");
        assert!(!ArtifactKey::random().expect("random").verify_hex("pets", "abc", b"code", &mac));
        assert!(!key.verify_hex("pets", "abc", b"code", "zz"));
    }
}
