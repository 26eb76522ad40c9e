//! Boots the real `petstore` binary for a test: a free port, a fresh
//! database (SQLite, or PostgreSQL when `PETSTORE_TEST_POSTGRES` names a
//! server), the built components, and the log lines it prints; or, with
//! `PETSTORE_TEST_CONTAINER`, the image under test (see `container`).

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
        dir.join("routes.toml").exists(),
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

    /// Each of `vars` set in its environment.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        self.env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
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
            return super::container::start(&image, &self.env, dir, &components);
        }
        let mut cmd = Command::new(binary());
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("ADMIN_PORT", "0")
            .env("DATABASE_URL", &database_url)
            .env("COMPONENTS_DIR", &components)
            // Compiled components are cached per server, as per pod.
            .env("COMPONENT_CACHE_DIR", dir.path().join("component-cache"))
            .env("METRICS_PORT", "0")
            .env("LOG_LEVEL", "info");
        if database_url.starts_with("postgres") {
            cmd.env("DB_COMPONENT_USER", super::pg::COMPONENT_ROLE);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn petstore");
        let (ports, logs) = read_until_listening(&mut child);
        Server {
            process: Process::Local(child),
            base: format!("http://127.0.0.1:{}", ports.public),
            port: ports.public,
            admin_port: ports.admin,
            metrics_port: ports.metrics,
            logs,
            dir,
            database_url,
            client: reqwest::Client::new(),
        }
    }
}

/// The host binary under test: this package's build, or another build of it
/// (k8s/seccomp/derive.sh traces the image's static binary this way).
pub fn binary() -> PathBuf {
    std::env::var_os("PETSTORE_TEST_BINARY").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_petstore").into())
}

/// Where a server listens.
pub(super) struct Ports {
    pub public: u16,
    pub admin: u16,
    pub metrics: u16,
}

/// Read the host's log lines (stdout of `child`) until it says where it
/// listens; keep collecting them afterwards.
pub(super) fn read_until_listening(child: &mut Child) -> (Ports, Arc<Mutex<Vec<String>>>) {
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
                    let _ = tx.send((port("addr"), port("admin_addr"), port("metrics_addr")));
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
        let ports = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((Some(public), Some(admin), Some(metrics))) => Ports { public, admin, metrics },
            _ => {
                let _ = child.kill();
                panic!("petstore did not start: {}\n{}", errors.lock().unwrap(), logs.lock().unwrap().join("\n"));
            }
        };
        (ports, logs)
    }
}

/// How the server under test runs.
pub(super) enum Process {
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

/// A fresh database (see [`create_postgres_database`]) on the server of
/// `PETSTORE_TEST_POSTGRES`, which `scripts/test` sets, for the tests of
/// several hosts on one database (`tests` names them when it is not set).
pub fn postgres_database(tests: &str) -> String {
    let server = std::env::var("PETSTORE_TEST_POSTGRES")
        .unwrap_or_else(|_| panic!("set PETSTORE_TEST_POSTGRES (scripts/test does) to run the {tests} tests"));
    create_postgres_database(&server)
}

/// Create a uniquely named database on the PostgreSQL server at `base` (a
/// superuser's URL ending in a database name), set up as the DBA would
/// (super::pg::set_up_roles), and return the service's URL of it.
pub fn create_postgres_database(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("petstore_test_{}_{n}", std::process::id());
    let out = Command::new("psql").arg(base).arg("-qc").arg(format!("CREATE DATABASE {name}")).output().expect("psql");
    assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    let (server, _) = base.rsplit_once('/').expect("a database URL");
    super::pg::set_up_roles(&format!("{server}/{name}"), &name, super::pg::APP_ROLE, "");
    let (scheme, rest) = server.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{}@{host}/{name}", super::pg::APP_ROLE)
}

fn lay_out_components(to: &Path, test_routes: &[(String, String, String)]) {
    let from = built_components();
    std::fs::create_dir_all(to).expect("components dir");
    let text = std::fs::read_to_string(from.join("routes.toml")).expect("routes.toml");
    let mut routes: toml::Table = toml::from_str(&text).expect("routes.toml is TOML");
    // Every component routes.toml routes to, as scripts/build-components built them.
    let files = routes.get("routes").and_then(toml::Value::as_table).expect("routes.toml has [routes]");
    for file in files.values().filter_map(toml::Value::as_str) {
        std::fs::copy(from.join(file), to.join(file)).unwrap_or_else(|e| panic!("copy component {file}: {e}"));
    }
    for (prefix, file, name) in test_routes {
        std::fs::copy(from.join("testing").join(file), to.join(format!("{name}.wasm"))).expect("copy test component");
        if let Some(entries) = section(&mut routes, "routes") {
            entries.insert(prefix.clone(), format!("{name}.wasm").into());
        }
        // Test components may use the service's tables, every table the
        // handlers are granted (SQLite checks the foreign keys of pets
        // against orders for whoever writes it, and the triggers that count
        // pets and orders write as the writer), and nothing else: the
        // catalog, the host's tables and the registry stay out of reach,
        // which the sandbox tests attack.
        if let Some(entries) = section(&mut routes, "tables") {
            let mut tables: Vec<toml::Value> =
                entries.values().filter_map(toml::Value::as_array).flatten().cloned().collect();
            tables.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            tables.dedup();
            entries.insert(name.clone(), toml::Value::Array(tables));
        }
    }
    std::fs::write(to.join("routes.toml"), toml::to_string(&routes).expect("TOML")).expect("write routes.toml");
}

/// The TOML table `key` of `file`, made if missing.
fn section<'a>(file: &'a mut toml::Table, key: &str) -> Option<&'a mut toml::Table> {
    file.entry(key).or_insert_with(|| toml::Table::new().into()).as_table_mut()
}

/// The components `routes.toml` routes to, by name.
pub fn routed_components() -> Vec<String> {
    let text = std::fs::read_to_string(built_components().join("routes.toml")).expect("routes.toml");
    let routes: toml::Table = toml::from_str(&text).expect("routes.toml is TOML");
    let files = routes.get("routes").and_then(toml::Value::as_table).expect("routes.toml has [routes]");
    files.values().filter_map(|f| f.as_str()?.strip_suffix(".wasm").map(str::to_string)).collect()
}

/// A built test component's bytes (build/components/testing/FILE).
pub fn test_component(file: &str) -> Vec<u8> {
    std::fs::read(built_components().join("testing").join(file)).expect("test component")
}

/// A running host, killed on drop.
pub struct Server {
    pub(super) process: Process,
    pub base: String,
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    pub(super) logs: Arc<Mutex<Vec<String>>>,
    pub(super) dir: Arc<tempfile::TempDir>,
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
        super::eventually_blocking("petstore becoming ready", Duration::from_secs(60), || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            stream.write_all(b"GET /api/v1/health/ready HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        });
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.metrics_port, path)
    }

    /// The components folder this server reads.
    pub fn components_dir(&self) -> PathBuf {
        self.dir.path().join("components")
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Local(child) => child.id(),
            Process::Container { .. } => panic!("signals are tested on a local process"),
        }
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
                let _ = super::container::podman().args(["rm", "-f", "-v", "-t", "0", id.as_str()]).output();
                let _ = logs.kill();
                let _ = logs.wait();
            }
        }
    }
}
