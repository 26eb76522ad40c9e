//! Boots the real `petstore` binary for end-to-end tests: a free port, a
//! fresh SQLite file, the built components, and the log lines it prints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Components built by `scripts/build-components` (override with `PETSTORE_COMPONENTS`).
pub fn built_components() -> PathBuf {
    let dir = std::env::var_os("PETSTORE_COMPONENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/components"));
    assert!(
        dir.join("pets.wasm").exists(),
        "no built components in {}: run scripts/build-components (scripts/test does)",
        dir.display()
    );
    dir
}

pub struct ServerBuilder {
    env: Vec<(String, String)>,
    /// Extra routes: prefix, file under build/components/testing, name to serve it as.
    test_routes: Vec<(String, String, String)>,
    precompile: bool,
    data_dir: Option<Arc<tempfile::TempDir>>,
    database_url: Option<String>,
    wait_ready: bool,
}

impl ServerBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Also route `/api/v1/misbehave` to the test component that traps,
    /// loops and hoards memory on request.
    pub fn with_misbehave(self) -> Self {
        self.with_test_component("/api/v1/misbehave", "misbehave.wasm", "misbehave")
    }

    /// Also route `prefix` to a test component, served under `name`.
    pub fn with_test_component(mut self, prefix: &str, file: &str, name: &str) -> Self {
        self.test_routes.push((prefix.into(), file.into(), name.into()));
        self
    }

    /// Run `petstore compile` on the components folder before starting.
    pub fn precompiled(mut self) -> Self {
        self.precompile = true;
        self
    }

    /// Reuse the database (and components folder) of an earlier server.
    pub fn data_of(mut self, other: &Server) -> Self {
        self.data_dir = Some(other.dir.clone());
        self.database_url = Some(other.database_url.clone());
        self
    }

    /// Return once the host listens, without waiting for readiness (for
    /// tests of a host whose database is not there).
    pub fn not_waiting_for_ready(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Use this database instead of a fresh one.
    pub fn database(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    /// Start the host and, as a load balancer would, wait until it is ready
    /// (on PostgreSQL it listens before its database is migrated).
    pub fn start(self) -> Server {
        let wait_ready = self.wait_ready;
        let server = self.spawn();
        if wait_ready {
            server.wait_until_ready();
        }
        server
    }

    fn spawn(self) -> Server {
        let dir = self.data_dir.clone().unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("temp dir")));
        let components = dir.path().join("components");
        if !components.exists() {
            lay_out_components(&components, &self.test_routes);
        }
        if self.precompile {
            let out = Command::new(binary())
                .arg("compile")
                .env("COMPONENTS_DIR", &components)
                .output()
                .expect("petstore compile");
            assert!(out.status.success(), "petstore compile: {}", String::from_utf8_lossy(&out.stderr));
        }
        let database_url = self.database_url.clone().unwrap_or_else(|| fresh_database(dir.path()));
        if let Ok(image) = std::env::var("PETSTORE_TEST_CONTAINER") {
            return self.start_container(&image, dir, &components);
        }
        let mut cmd = Command::new(binary());
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("ADMIN_PORT", "0")
            .env("DATABASE_URL", &database_url)
            .env("COMPONENTS_DIR", &components)
            .env("LOG_LEVEL", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn petstore");
        let (port, admin_port, logs) = read_until_listening(&mut child);
        Server {
            process: Process::Local(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin_port,
            logs,
            dir,
            database_url,
            client: reqwest::Client::new(),
        }
    }

    /// The same server as a container of the image under test, confined as
    /// production runs it; the test's components folder is mounted read-only.
    fn start_container(self, image: &str, dir: Arc<tempfile::TempDir>, components: &Path) -> Server {
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
            "-v".into(),
            format!("{}:/components:ro", components.display()),
            "-e".into(),
            "COMPONENTS_DIR=/components".into(),
            "-e".into(),
            "LOG_LEVEL=info".into(),
        ];
        for (k, v) in &self.env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(image.into());
        let out = podman().args(&args).output().expect("podman run");
        assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut logs_child = podman()
            .args(["logs", "-f", &id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman logs");
        let (_, _, logs) = read_until_listening(&mut logs_child);
        let published = |inner: &str| -> u16 {
            let out = podman().args(["port", &id, inner]).output().expect("podman port");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("published port")
        };
        let (port, admin_port) = (published("8080"), published("9090"));
        Server {
            process: Process::Container { id, logs: logs_child },
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin_port,
            logs,
            dir,
            database_url: "sqlite:///data/petstore.db".into(),
            client: reqwest::Client::new(),
        }
    }
}

/// The host binary under test: this package's build, or another build of it
/// (k8s/seccomp/derive.sh traces the image's static binary this way).
pub fn binary() -> PathBuf {
    std::env::var_os("PETSTORE_TEST_BINARY").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_petstore").into())
}

/// podman as scripts/container-test runs it (PETSTORE_TEST_PODMAN holds the
/// global arguments, e.g. its --root).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if let Ok(args) = std::env::var("PETSTORE_TEST_PODMAN") {
        cmd.args(args.split_whitespace());
    }
    cmd
}

fn seccomp_profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/seccomp/petstore.json")
}

/// Read the host's log lines (stdout of `child`) until it says where it
/// listens; keep collecting them afterwards.
fn read_until_listening(child: &mut Child) -> (u16, u16, Arc<Mutex<Vec<String>>>) {
    {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let port = |key: &str| v[key].as_str().and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
                    let _ = tx.send((port("addr"), port("admin_addr")));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let errors = Arc::new(Mutex::new(String::new()));
        let err_sink = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err_sink.lock().unwrap().push_str(&line);
                err_sink.lock().unwrap().push('\n');
            }
        });
        let (port, admin_port) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((Some(port), Some(admin_port))) => (port, admin_port),
            _ => {
                let _ = child.kill();
                panic!("petstore did not start: {}\n{}", errors.lock().unwrap(), logs.lock().unwrap().join("\n"));
            }
        };
        (port, admin_port, logs)
    }
}

/// How the server under test runs.
enum Process {
    Local(Child),
    Container { id: String, logs: Child },
}

/// The backend under test: a fresh PostgreSQL database on the server named
/// by `PETSTORE_TEST_POSTGRES` (scripts/test sets it), else a SQLite file.
pub fn fresh_database(dir: &Path) -> String {
    match std::env::var("PETSTORE_TEST_POSTGRES") {
        Ok(base) => create_postgres_database(&base),
        Err(_) => format!("sqlite://{}", dir.join("petstore.db").display()),
    }
}

/// Create a uniquely named database on the PostgreSQL server at `base`
/// (a URL ending in a database name) and return its URL.
pub fn create_postgres_database(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("petstore_test_{}_{n}", std::process::id());
    let out = Command::new("psql").arg(base).arg("-qc").arg(format!("CREATE DATABASE {name}")).output().expect("psql");
    assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    let (server, _) = base.rsplit_once('/').expect("a database URL");
    format!("{server}/{name}")
}

fn lay_out_components(to: &Path, test_routes: &[(String, String, String)]) {
    let from = built_components();
    std::fs::create_dir_all(to).expect("components dir");
    for file in ["pets.wasm", "orders.wasm"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy component");
    }
    let mut routes = std::fs::read_to_string(from.join("routes.toml")).expect("routes.toml");
    for (prefix, file, name) in test_routes {
        std::fs::copy(from.join("testing").join(file), to.join(format!("{name}.wasm"))).expect("copy test component");
        routes.push_str(&format!("\"{prefix}\" = \"{name}.wasm\"\n"));
    }
    std::fs::write(to.join("routes.toml"), routes).expect("write routes.toml");
}

/// A built test component's bytes (build/components/testing/FILE).
pub fn test_component(file: &str) -> Vec<u8> {
    std::fs::read(built_components().join("testing").join(file)).expect("test component")
}

/// A running host, killed on drop.
pub struct Server {
    process: Process,
    pub base: String,
    pub port: u16,
    pub admin_port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    dir: Arc<tempfile::TempDir>,
    pub database_url: String,
    pub client: reqwest::Client,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            env: Vec::new(),
            test_routes: Vec::new(),
            precompile: false,
            data_dir: None,
            database_url: None,
            wait_ready: true,
        }
    }

    pub fn start() -> Server {
        Server::builder().start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Poll readiness (plain blocking HTTP: `start` is called from async tests).
    fn wait_until_ready(&self) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ =
                    stream.write_all(b"GET /api/v1/health/ready HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("petstore never became ready");
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The components folder this server reads.
    pub fn components_dir(&self) -> PathBuf {
        self.dir.path().join("components")
    }

    /// Scrape `/metrics`: each sample line as (series, value).
    pub async fn metrics(&self) -> std::collections::HashMap<String, f64> {
        // A connection of its own each time: a pooled one may be closed by
        // the server's keep-alive timeout just as it is reused.
        let scrape = self.client.get(self.admin_url("/metrics")).header("connection", "close").send();
        let text = scrape.await.expect("scrape").text().await.expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Local(child) => child.id(),
            Process::Container { .. } => panic!("signals are tested on a local process"),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.client.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Answer::read(self.client.delete(self.url(path)).send().await.expect("DELETE")).await
    }

    /// Send `body` as JSON with `method`.
    pub async fn send(&self, method: &str, path: &str, body: &Value) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, body).await
    }

    /// Hot-swap component `name` through the admin API.
    pub async fn upload_component(&self, name: &str, bytes: Vec<u8>, token: Option<&str>) -> Answer {
        let mut req = self.client.put(self.admin_url(&format!("/admin/components/{name}"))).body(bytes);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Answer::read(req.send().await.expect("PUT component")).await
    }

    /// Create a pet and return its id.
    pub async fn create_pet(&self, body: &Value) -> i64 {
        let a = self.post("/api/v1/pets", body).await;
        assert_eq!(a.status, 201, "create pet: {}", a.body);
        a.body["id"].as_i64().expect("id")
    }

    /// The raw log lines, still filled in (by the reader thread) after the
    /// server has exited.
    pub fn log_lines(&self) -> Arc<Mutex<Vec<String>>> {
        self.logs.clone()
    }

    /// Log lines printed so far, parsed.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Send SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        self.wait(within)
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let Process::Local(child) = &mut self.process else { panic!("waiting is tested on a local process") };
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "petstore did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.process {
            Process::Local(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Container { id, logs } => {
                let _ = podman().args(["rm", "-f", "-v", "-t", "0", id.as_str()]).output();
                let _ = logs.kill();
                let _ = logs.wait();
            }
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, body, text }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert the contract's error shape and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["error"]["code"], code, "{}", self.text);
        assert!(self.body["error"]["message"].is_string(), "{}", self.text);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "error without JSON content type: {:?}",
            self.header("content-type")
        );
    }
}
