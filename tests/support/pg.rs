//! A PostgreSQL server of a test's own (scripts/pg-instance), so the test
//! can stop and start it.

use std::path::PathBuf;
use std::process::Command;

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
        Pg { dir: dir.to_string(), port: port.parse().expect("port") }
    }
    pub fn start(&self) {
        run(&["start", &self.dir]);
    }
    pub fn stop(&self) {
        run(&["stop", &self.dir]);
    }
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql").arg(self.url()).args(["-tAc", sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["destroy", &self.dir]).output();
    }
}
