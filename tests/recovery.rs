//! The disaster-recovery rehearsal (docs/disaster-recovery.md): 100,000
//! pets and 100,000 orders in SQLite, exported, imported into a fresh
//! PostgreSQL database, exported again; counts and every row compared, and
//! each step's time printed. scripts/test runs it with `--nocapture`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

const PETS: usize = 100_000;
const ORDERS: usize = 100_000;

fn petstore(database_url: &str, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = crate::support::command()
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .output()
        .expect("run petstore");
    assert!(out.status.success(), "petstore {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed().as_secs_f64()
}

/// A backup of PETS pets (with tags) and ORDERS orders, as production data
/// might look.
fn generate(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let header = serde_json::json!({"format": "petstore-backup", "version": 1, "exported_at": "2026-11-26T00:00:00Z", "pets": PETS, "orders": ORDERS});
    writeln!(out, "{header}").unwrap();
    const SPECIES: [&str; 3] = ["dog", "cat", "parrot"];
    const ORDER_STATUSES: [&str; 3] = ["placed", "approved", "delivered"];
    let statuses = ["available", "pending", "sold"];
    for id in 1..=PETS {
        let tags: Vec<String> = (0..id % 4).map(|t| format!("tag-{}", (id + t) % 50)).collect();
        let pet = serde_json::json!({"type": "pet", "id": id, "name": format!("Pet {id} ✓"), "species": SPECIES[id % 3],
            "tags": tags, "status": statuses[id % 3], "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-06-07T08:09:10Z"});
        writeln!(out, "{pet}").unwrap();
    }
    for id in 1..=ORDERS {
        let pet_id = if id % 1000 == 0 { serde_json::Value::Null } else { serde_json::json!((id * 7) % PETS + 1) };
        let order = serde_json::json!({"type": "order", "id": id, "pet_id": pet_id, "quantity": id % 100 + 1,
            "status": ORDER_STATUSES[id % 3], "created_at": "2026-03-04T05:06:07Z", "updated_at": "2026-03-04T05:06:07Z"});
        writeln!(out, "{order}").unwrap();
    }
}

fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(str::to_string).collect()
}

#[test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
fn rehearse_recovery_from_sqlite_into_a_fresh_postgresql() {
    let base = std::env::var("PETSTORE_TEST_POSTGRES").expect("PETSTORE_TEST_POSTGRES names a PostgreSQL server");
    let dir = tempfile::tempdir().unwrap();
    let (seed, from_sqlite, from_postgres) =
        (dir.path().join("seed.jsonl"), dir.path().join("sqlite.jsonl"), dir.path().join("postgres.jsonl"));
    let sqlite = format!("sqlite://{}", dir.path().join("source.db").display());
    let postgres = crate::support::create_postgres_database(&base);

    let started = Instant::now();
    generate(&seed);
    let generate_s = started.elapsed().as_secs_f64();
    let fill_s = petstore(&sqlite, &["import", "--from", seed.to_str().unwrap()]);
    let export_s = petstore(&sqlite, &["export", "--to", from_sqlite.to_str().unwrap()]);
    let import_s = petstore(&postgres, &["import", "--from", from_sqlite.to_str().unwrap()]);
    let verify_s = petstore(&postgres, &["export", "--to", from_postgres.to_str().unwrap()]);

    let (a, b) = (rows(&from_sqlite), rows(&from_postgres));
    assert_eq!(a.len(), PETS + ORDERS, "the SQLite export holds every row");
    assert_eq!(b.len(), a.len(), "PostgreSQL holds as many rows as SQLite");
    for (line, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "row {} differs after the move", line + 2);
    }
    let parsed =
        |rows: &[String]| -> Vec<serde_json::Value> { rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect() };
    assert_eq!(parsed(&a), parsed(&rows(&seed)), "and both hold exactly the seeded rows");
    let checksum = |rows: &[String]| {
        let mut h = Sha256::new();
        rows.iter().for_each(|r| h.update(r.as_bytes()));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(checksum(&a), checksum(&b));
    let size_mib = std::fs::metadata(&from_sqlite).unwrap().len() as f64 / (1024.0 * 1024.0);

    println!("recovery rehearsal: {PETS} pets and {ORDERS} orders ({size_mib:.1} MiB backup)");
    println!("  generate backup file          {generate_s:>6.1} s");
    println!("  import into SQLite            {fill_s:>6.1} s");
    println!("  export from SQLite            {export_s:>6.1} s");
    println!("  import into fresh PostgreSQL  {import_s:>6.1} s");
    println!("  export from PostgreSQL        {verify_s:>6.1} s");
    println!("  rows compared: {} identical, sha256 {}", a.len(), &checksum(&a)[..16]);
}
