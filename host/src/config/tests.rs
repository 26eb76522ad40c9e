use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

#[test]
fn defaults_match_the_contract() {
    let c = config(&[]).unwrap();
    assert_eq!((c.port, c.admin_port, c.metrics_port), (8080, 9090, 9091));
    assert_eq!((c.pagination_limit, c.pagination_max), (20, 100));
    assert_eq!(c.request_timeout, Duration::from_millis(5000));
    assert_eq!(
        (c.max_connections, c.header_timeout, c.keepalive_timeout),
        (1024, Duration::from_secs(10), Duration::from_secs(75))
    );
    assert_eq!(c.environment, Environment::Development);
    assert!(c.database_url.starts_with("sqlite:"));
}

#[test]
fn public_keys_are_read_as_a_line_or_a_pub_file_and_junk_is_refused() {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
    let line = pair.pk.to_base64();
    let file = format!("untrusted comment: minisign public key\n{line}\n");
    for text in [&line, &file] {
        let key = config(&[("COMPONENT_PUBLIC_KEY", text)]).unwrap().component_public_key;
        assert_eq!(key, Some(minisign_verify::PublicKey::from_base64(&line).expect("key")));
    }
    let junk = config(&[("COMPONENT_PUBLIC_KEY", "not a key")]).unwrap_err();
    assert_eq!(junk.variable, "COMPONENT_PUBLIC_KEY");
    assert!(junk.message.contains("not a minisign public key"), "{junk}");
}

#[test]
fn bad_values_name_their_variable() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("PAGINATION_LIMIT", "0"),
        ("REQUEST_TIMEOUT_MS", "-1"),
        ("ENVIRONMENT", "prod"),
        ("CORS_ORIGINS", "example.com"),
        ("DATABASE_URL", "mysql://x"),
        ("DB_STATEMENT_TIMEOUT_MS", "0"),
        ("COMPONENTS_WATCH", "maybe"),
        ("SHUTDOWN_DRAIN_MS", "forever"),
        ("MAX_CONNECTIONS", "0"),
        ("HEADER_TIMEOUT_MS", "0"),
        ("KEEPALIVE_TIMEOUT_MS", "1h"),
    ] {
        let err = config(&[(var, value)]).unwrap_err();
        assert_eq!(err.variable, var, "{var}={value}");
    }
    let err = config(&[("PAGINATION_LIMIT", "50"), ("PAGINATION_MAX", "10")]).unwrap_err();
    assert_eq!(err.variable, "PAGINATION_LIMIT");
}

#[test]
fn production_refuses_sqlite_and_ambiguous_credentials() {
    let err = config(&[("ENVIRONMENT", "production")]).unwrap_err();
    assert_eq!(err.variable, "DATABASE_URL");
    assert!(err.to_string().contains("PostgreSQL"));
    let ok =
        config(&[("ENVIRONMENT", "production"), ("DATABASE_URL", "postgres://db.internal/petstore"), ("DB_USER", "u")]);
    assert_eq!(ok.unwrap().db_user.as_deref(), Some("u"));
    let both = config(&[("DATABASE_URL", "postgres://a:b@db/petstore"), ("DB_USER", "u")]).unwrap_err();
    assert_eq!(both.variable, "DB_USER");
    assert!(config(&[("DATABASE_URL", "postgresql://db/petstore?sslmode=verify-full&sslrootcert=/ca.pem")]).is_ok());
}

#[test]
fn staging_and_production_with_the_admin_api_need_a_signing_key() {
    let token = "t".repeat(32);
    for environment in ["staging", "production"] {
        let vars = [("ENVIRONMENT", environment), ("DATABASE_URL", "postgres://db/p"), ("ADMIN_TOKEN", &token)];
        assert_eq!(config(&vars).unwrap_err().variable, "COMPONENT_PUBLIC_KEY", "{environment}");
    }
    assert!(config(&[("ADMIN_TOKEN", &token)]).is_ok(), "development may take unsigned uploads");
    let junk = [("COMPONENT_PUBLIC_KEY", "not a key")];
    assert_eq!(config(&junk).unwrap_err().variable, "COMPONENT_PUBLIC_KEY");
    let missing = [("COMPONENT_PUBLIC_KEY_FILE", "/nonexistent/key.pub")];
    assert_eq!(config(&missing).unwrap_err().variable, "COMPONENT_PUBLIC_KEY_FILE");
    assert_eq!(config(&[("POD_NAME", "petstore-7d9f-abcde")]).unwrap().replica_id, "petstore-7d9f-abcde");
}

#[test]
fn staging_and_production_refuse_a_short_admin_token() {
    let short = "t".repeat(31);
    for environment in ["staging", "production"] {
        let vars = [("ENVIRONMENT", environment), ("DATABASE_URL", "postgres://db/p"), ("ADMIN_TOKEN", short.as_str())];
        assert_eq!(config(&vars).unwrap_err().variable, "ADMIN_TOKEN", "{environment}");
    }
    let long = "t".repeat(32);
    let staging = [("ENVIRONMENT", "staging"), ("DATABASE_URL", "postgres://db/p"), ("ADMIN_TOKEN", &long)];
    assert_eq!(config(&staging).unwrap_err().variable, "COMPONENT_PUBLIC_KEY", "long enough: the next check");
    assert!(config(&[("ADMIN_TOKEN", "dev")]).is_ok(), "development takes any token");
}

#[test]
fn the_artifact_key_is_256_random_bits_in_hex() {
    let key = "ab".repeat(32);
    assert_eq!(config(&[("COMPONENT_ARTIFACT_KEY", &key)]).unwrap().component_artifact_key, Some(vec![0xab; 32]));
    for bad in ["ab".repeat(31), "zz".repeat(32), "abc".into()] {
        assert_eq!(config(&[("COMPONENT_ARTIFACT_KEY", &bad)]).unwrap_err().variable, "COMPONENT_ARTIFACT_KEY");
    }
    let both = [("COMPONENT_ARTIFACT_KEY", key.as_str()), ("COMPONENT_ARTIFACT_KEY_FILE", "/k")];
    assert_eq!(config(&both).unwrap_err().variable, "COMPONENT_ARTIFACT_KEY");
    let missing = [("COMPONENT_ARTIFACT_KEY_FILE", "/nonexistent/key")];
    assert_eq!(config(&missing).unwrap_err().variable, "COMPONENT_ARTIFACT_KEY_FILE");
    assert_eq!(config(&[]).unwrap().component_artifact_key, None);
}

#[test]
fn cors_origins_are_a_trimmed_list() {
    let c = config(&[("CORS_ORIGINS", "https://a.example, http://localhost:3000")]).unwrap();
    assert_eq!(c.cors_origins, vec!["https://a.example", "http://localhost:3000"]);
}
