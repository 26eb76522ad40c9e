use super::*;

fn ask<'a>(action: c_int, first: Option<&'a str>, second: Option<&'a str>) -> Access<'a> {
    Access { action, first, second, database: Some("main"), inner: None }
}

fn connection(read_only: bool) -> Sandbox {
    let tables = ["pets", "pet_tags", "orders", "_sqlx_migrations"].map(String::from).into();
    Sandbox { read_only, tables, ..Sandbox::default() }
}

fn decide(grant: &Grant, read_only: bool, asked: &Access) -> Result<(), String> {
    super::decide(grant, &connection(read_only), asked)
}

#[test]
fn a_component_reads_and_writes_only_its_own_tables() {
    let grant = Grant::new("pets", ["pets", "pet_tags"]);
    for action in [ffi::SQLITE_READ, ffi::SQLITE_INSERT, ffi::SQLITE_UPDATE, ffi::SQLITE_DELETE] {
        assert!(decide(&grant, false, &ask(action, Some("pets"), Some("name"))).is_ok(), "{action}");
        assert!(decide(&grant, false, &ask(action, Some("orders"), None)).is_err(), "{action}");
        assert!(decide(&grant, false, &ask(action, Some("sqlite_master"), None)).is_err(), "{action}");
    }
    let elsewhere = Access { database: Some("stolen"), ..ask(ffi::SQLITE_READ, Some("pets"), None) };
    assert!(decide(&grant, false, &elsewhere).is_err(), "another database's table of the same name");
    assert!(decide(&grant, true, &ask(ffi::SQLITE_DELETE, Some("pets"), None)).is_err(), "a reader writes nothing");
    assert!(decide(&grant, true, &ask(ffi::SQLITE_READ, Some("json_each"), None)).is_ok());
    let common_table = Access { database: None, ..ask(ffi::SQLITE_READ, Some("r"), Some("")) };
    assert!(decide(&grant, true, &common_table).is_ok(), "WITH r AS (…): the statement's own");
    for counted in ["orders", "sqlite_master", "pragma_table_info", "_SQLX_MIGRATIONS"] {
        let unqualified = Access { database: None, ..ask(ffi::SQLITE_READ, Some(counted), Some("")) };
        assert!(decide(&grant, true, &unqualified).is_err(), "count(*) FROM {counted}");
    }
    let unnamed_write = Access { database: None, ..ask(ffi::SQLITE_DELETE, Some("orders"), None) };
    assert!(decide(&grant, false, &unnamed_write).is_err());
}

#[test]
fn everything_but_plain_queries_and_dml_is_refused() {
    let grant = Grant::new("pets", ["pets"]);
    for action in [
        ffi::SQLITE_PRAGMA,
        ffi::SQLITE_ATTACH,
        ffi::SQLITE_DETACH,
        ffi::SQLITE_TRANSACTION,
        ffi::SQLITE_SAVEPOINT,
        ffi::SQLITE_CREATE_TABLE,
        ffi::SQLITE_CREATE_TRIGGER,
        ffi::SQLITE_DROP_TABLE,
        ffi::SQLITE_ALTER_TABLE,
        ffi::SQLITE_CREATE_VTABLE,
        ffi::SQLITE_ANALYZE,
    ] {
        let refused = decide(&grant, false, &ask(action, Some("pets"), None));
        assert!(refused.is_err(), "{action}");
    }
    assert_eq!(
        decide(&grant, false, &ask(ffi::SQLITE_PRAGMA, Some("query_only"), Some("1"))),
        Err("run PRAGMA query_only".into())
    );
    assert!(decide(&grant, false, &ask(ffi::SQLITE_FUNCTION, None, Some("load_extension"))).is_err());
    assert!(decide(&grant, false, &ask(ffi::SQLITE_FUNCTION, None, Some("lower"))).is_ok());
    let from_trigger = Access { inner: Some("pets_tags_insert"), ..ask(ffi::SQLITE_INSERT, Some("pet_tags"), None) };
    assert!(decide(&grant, false, &from_trigger).is_ok(), "the schema's triggers keep their tables");
}

#[test]
fn a_components_statement_is_kept_apart_from_everyone_elses() {
    let pets =
        Caller::Component { grant: Arc::new(Grant::new("pets", ["pets"])), deadline: tokio::time::Instant::now() };
    let orders =
        Caller::Component { grant: Arc::new(Grant::new("orders", ["pets"])), deadline: tokio::time::Instant::now() };
    let sql = "SELECT 1";
    let texts = [statement_text(&Caller::Host, sql), statement_text(&pets, sql), statement_text(&orders, sql)];
    assert_eq!(texts[0], sql);
    assert!(texts[1] != texts[2] && texts[1] != texts[0]);
}
