//! A signature binds what is installed: the component it is for, the
//! environment, and a version that only goes up. Signed for another
//! component or another environment, older than the newest activated (a
//! downgrade, or an old signature replayed), or a version number reused for
//! other bytes: refused, and nothing changes. Going back is an explicit
//! rollback to a version the registry holds. On SQLite first; on PostgreSQL
//! in scripts/test's PostgreSQL pass.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Answer, Server, test_component};

/// Staging needs a token of 32 bytes or more.
const TOKEN: &str = "signatures-token-signatures-token";

struct Signer(minisign::SecretKey);

impl Signer {
    /// The `X-Component-Signature` header for `bytes`, its trusted comment
    /// naming `component`, `environment` and `version`.
    fn sign(&self, bytes: &[u8], component: &str, environment: &str, version: u64) -> String {
        let comment = format!("petstore component={component} environment={environment} version={version}");
        self.sign_with(bytes, &comment)
    }

    fn sign_with(&self, bytes: &[u8], comment: &str) -> String {
        let signed = minisign::sign(None, &self.0, std::io::Cursor::new(bytes), Some(comment), None).expect("sign");
        base64::engine::general_purpose::STANDARD.encode(signed.to_string())
    }
}

fn staging() -> (Server, Signer) {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
    let s = Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ENVIRONMENT", "staging")
        .env("ADMIN_TOKEN", TOKEN)
        .env("COMPONENT_PUBLIC_KEY", &pair.pk.to_base64())
        .start();
    (s, Signer(pair.sk))
}

async fn upload(s: &Server, bytes: &[u8], signature: &str) -> Answer {
    s.upload_component_with("versioned", bytes.to_vec(), Some(TOKEN), &[("x-component-signature", signature)]).await
}

async fn version(s: &Server) -> Value {
    s.get("/api/v1/versioned").await.body["version"].clone()
}

async fn stored(s: &Server) -> Value {
    let list = s.admin_components(TOKEN).await;
    let versioned = list["components"].as_array().into_iter().flatten().find(|c| c["name"] == "versioned");
    versioned.map(|c| c["versions"].clone()).unwrap_or_default()
}

async fn rollback(s: &Server, digest: &str) -> u16 {
    let req = s.client.put(s.admin_url("/admin/components/versioned/active")).bearer_auth(TOKEN);
    req.json(&json!({ "digest": digest })).send().await.expect("rollback").status().as_u16()
}

#[tokio::test]
async fn a_signature_for_another_component_or_environment_or_without_its_claims_is_refused() {
    let (s, signer) = staging();
    let b = test_component("version_b.wasm");
    let before = stored(&s).await;
    for (signature, why) in [
        (signer.sign(&b, "orders", "staging", 1), "another component's"),
        (signer.sign(&b, "versioned", "production", 1), "another environment's"),
        (signer.sign_with(&b, "timestamp:1 file:version_b.wasm"), "no claims"),
        (signer.sign_with(&b, "petstore component=versioned environment=staging"), "no version"),
    ] {
        upload(&s, &b, &signature).await.assert_error(403, "signature_rejected");
        assert_eq!(version(&s).await, "version-a", "{why}: nothing changed");
        assert_eq!(stored(&s).await, before, "{why}: nothing stored");
    }
    let signed = upload(&s, &b, &signer.sign(&b, "versioned", "staging", 1)).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert_eq!(version(&s).await, "version-b");
}

#[tokio::test]
async fn versions_only_go_up_except_by_an_explicit_rollback() {
    let (s, signer) = staging();
    let (b, hoarder) = (test_component("version_b.wasm"), test_component("hoarder.wasm"));
    let original = stored(&s).await[0]["digest"].as_str().expect("image version").to_string();

    let v2 = signer.sign(&b, "versioned", "staging", 2);
    let put = upload(&s, &b, &v2).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let b_digest = put.body["digest"].as_str().expect("digest").to_string();
    let v5 = upload(&s, &hoarder, &signer.sign(&hoarder, "versioned", "staging", 5)).await;
    assert_eq!(v5.status, 200, "{}", v5.text);
    let after_v5 = stored(&s).await;

    // Lower than the newest activated: a downgrade, or the old signature replayed.
    upload(&s, &b, &v2).await.assert_error(409, "conflict");
    upload(&s, &b, &signer.sign(&b, "versioned", "staging", 4)).await.assert_error(409, "conflict");
    // The same version number for other bytes.
    upload(&s, &b, &signer.sign(&b, "versioned", "staging", 5)).await.assert_error(409, "conflict");
    assert_eq!(stored(&s).await, after_v5, "nothing stored");

    // Going back is explicit: a rollback to a version the registry holds.
    assert_eq!(rollback(&s, &b_digest).await, 200);
    assert_eq!(version(&s).await, "version-b");
    assert_eq!(rollback(&s, &original).await, 200, "the image's own version too");
    assert_eq!(version(&s).await, "version-a");
    // A rollback does not lower the bar for uploads.
    upload(&s, &b, &signer.sign(&b, "versioned", "staging", 3)).await.assert_error(409, "conflict");
    // The same bytes signed again with a newer version roll forward.
    let v6 = upload(&s, &b, &signer.sign(&b, "versioned", "staging", 6)).await;
    assert_eq!(v6.status, 200, "{}", v6.text);
    assert_eq!(version(&s).await, "version-b");
    let versions = stored(&s).await;
    let listed: Vec<(Value, Value)> =
        versions.as_array().expect("versions").iter().map(|v| (v["version"].clone(), v["active"].clone())).collect();
    assert!(listed.contains(&(json!(5), json!(false))) && listed.contains(&(json!(2), json!(true))), "{versions}");
}
