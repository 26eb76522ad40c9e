//! PostgreSQL for the tests: a server of a test's own (scripts/pg-instance),
//! so the test can stop and start it, and the DBA's step that every
//! database the service uses goes through first: its two roles, made by the
//! same script production runs (k8s/components/postgres/database-roles.sql).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The service's own role in the tests (owner of their databases).
pub const APP_ROLE: &str = "petstore_test_app";
/// The role components' statements run as (`DB_COMPONENT_USER`).
pub const COMPONENT_ROLE: &str = "petstore_test_component";

/// Run the DBA's script for database `dbname`, connecting with `admin_url`
/// (a superuser's URL of that database): its roles made or brought up to
/// date, the database given to `app_role`. One run at a time: concurrent
/// changes to one role collide ("tuple concurrently updated").
pub fn set_up_roles(admin_url: &str, dbname: &str, app_role: &str, app_password: &str) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/components/postgres/database-roles.sql");
    let var = |name: &str, value: &str| format!("{name}={value}");
    let out = Command::new("psql")
        .arg(admin_url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(var("dbname", dbname))
        .args(["-v", &var("app_role", app_role), "-v", &var("app_password", app_password)])
        .args(["-v", &var("component_role", COMPONENT_ROLE), "-v", "component_password="])
        .arg("-f")
        .arg(&script)
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
}

/// A private PostgreSQL server, destroyed on drop.
pub struct Pg {
    pub dir: String,
    pub port: u16,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-instance")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(script()).args(args).output().expect("scripts/pg-instance");
    assert!(out.status.success(), "pg-instance {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Pg {
    pub fn create(running: bool) -> Pg {
        Pg::create_with(if running { &["create"] } else { &["create", "--stopped"] })
    }
    pub fn create_with(args: &[&str]) -> Pg {
        let out = run(args);
        let (dir, port) = out.split_once(' ').expect("DIR PORT");
        let pg = Pg { dir: dir.to_string(), port: port.parse().expect("port") };
        if !args.contains(&"--stopped") {
            pg.set_up_roles(APP_ROLE, "");
        }
        pg
    }
    /// Start the server, with the service's roles set up.
    pub fn start(&self) {
        run(&["start", &self.dir]);
        self.set_up_roles(APP_ROLE, "");
    }
    /// The DBA's step for the `postgres` database, with `app_role` as the service's.
    pub fn set_up_roles(&self, app_role: &str, app_password: &str) {
        set_up_roles(&self.admin_url(), "postgres", app_role, app_password);
    }
    pub fn stop(&self) {
        run(&["stop", &self.dir]);
    }
    /// The service's URL (its own role).
    pub fn url(&self) -> String {
        format!("postgres://{APP_ROLE}@127.0.0.1:{}/postgres", self.port)
    }
    /// A superuser's URL, for what the test itself looks at or does.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql").arg(self.admin_url()).args(["-tAc", sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["destroy", &self.dir]).output();
    }
}
