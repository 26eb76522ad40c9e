//! The server under test as a container of the image (`PETSTORE_TEST_CONTAINER`),
//! run by podman with the confinement production uses (scripts/container-test).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::server::{Process, Server, read_until_listening};

/// The server as a container of the image under test, confined as
/// production runs it; the test's components folder is mounted read-only.
pub fn start(image: &str, env: &[(String, String)], dir: Arc<tempfile::TempDir>, components: &Path) -> Server {
    // The container runs as 65532: let it read the (0700) temp folder.
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.path(), components] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for entry in std::fs::read_dir(components).expect("components") {
        let path = entry.expect("entry").path();
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--read-only".into(),
        "--user".into(),
        "65532:65532".into(),
        "--cap-drop=ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--security-opt".into(),
        format!("seccomp={}", seccomp_profile().display()),
        "--tmpfs".into(),
        "/tmp:rw,size=16m,mode=1777".into(),
        "-p".into(),
        "127.0.0.1::8080".into(),
        "-p".into(),
        "127.0.0.1::9090".into(),
        "-p".into(),
        "127.0.0.1::9091".into(),
        "-v".into(),
        format!("{}:/components:ro", components.display()),
        "-e".into(),
        "COMPONENTS_DIR=/components".into(),
        "-e".into(),
        "LOG_LEVEL=info".into(),
    ];
    for (k, v) in env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(image.into());
    let out = podman().args(&args).output().expect("podman run");
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut logs_child =
        podman().args(["logs", "-f", &id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("podman logs");
    let (_, logs) = read_until_listening(&mut logs_child);
    let published = |inner: &str| -> u16 {
        let out = podman().args(["port", &id, inner]).output().expect("podman port");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("published port")
    };
    let (port, admin_port, metrics_port) = (published("8080"), published("9090"), published("9091"));
    Server {
        process: Process::Container { id, logs: logs_child },
        base: format!("http://127.0.0.1:{port}"),
        port,
        admin_port,
        metrics_port,
        logs,
        dir,
        database_url: "sqlite:///data/petstore.db".into(),
        client: reqwest::Client::new(),
    }
}

/// podman as scripts/container-test runs it (PETSTORE_TEST_PODMAN holds the
/// global arguments, e.g. its --root).
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if let Ok(args) = std::env::var("PETSTORE_TEST_PODMAN") {
        cmd.args(args.split_whitespace());
    }
    cmd
}

fn seccomp_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/seccomp/petstore.json")
}
