//! What the component role may reach, set by the host (which owns the
//! schema) every time it starts, then checked: the role is the DBA's
//! (`k8s/components/postgres/database-roles.sql`), its privileges are
//! the service's to give.
//!
//! It gets USAGE on schema `public` and SELECT, INSERT, UPDATE and DELETE
//! on the tables the grants name; every other privilege it had on a table
//! of `public` is revoked, and the registry's schema is closed to it. The
//! host also takes away what PostgreSQL gives every role by default where
//! it owns the object (CREATE on `public` before PostgreSQL 15, TEMPORARY
//! on the database). Then the role is checked, and the database is not
//! ready while anything is wrong: not a superuser, no CREATEROLE,
//! CREATEDB, REPLICATION or BYPASSRLS, member of no role, no CREATE on any
//! schema or on the database, no temporary tables, no way into the
//! registry's schema.

use sqlx::{PgConnection, Row};

use super::Postgres;
use crate::storage::DbError;

/// The advisory lock replicas take in turn to change privileges:
/// concurrent GRANTs on one object fail ("tuple concurrently updated").
const ROLES_LOCK: i64 = 0x7065_7473_746f_7265; // "petstore"

/// Give `role` exactly `tables`, then check it can do nothing more.
pub(super) async fn set_up(conn: &mut PgConnection, role: &str, tables: &[String]) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(ROLES_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(Postgres::classify)?;
    let granted = grant(conn, role, tables).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(ROLES_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(Postgres::classify)?;
    granted?;
    check(conn, role).await
}

async fn grant(conn: &mut PgConnection, role: &str, tables: &[String]) -> Result<(), DbError> {
    let role = quote(role);
    let mut statements = vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}"),
        "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC".to_string(),
        "REVOKE ALL ON SCHEMA petstore_registry FROM PUBLIC".to_string(),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
    ];
    if !tables.is_empty() {
        let tables: Vec<String> = tables.iter().map(|t| quote(t)).collect();
        statements.push(format!("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {role}", tables.join(", ")));
    }
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(|err| {
            DbError::Unavailable(format!("cannot give the component role its tables: {}", Postgres::classify(err)))
        })?;
    }
    // Where the host owns the object; elsewhere the DBA's script has done it
    // (and `check` says if not).
    for sql in [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()); END $$",
    ] {
        if let Err(err) = sqlx::raw_sql(sql).execute(&mut *conn).await {
            tracing::debug!(error = %err, sql, "not the owner; the DBA's script does this");
        }
    }
    Ok(())
}

/// Everything wrong with `role`, as one error.
async fn check(conn: &mut PgConnection, role: &str) -> Result<(), DbError> {
    let row = sqlx::query(
        "SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls, \
           EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid), \
           has_database_privilege(r.oid, current_database(), 'CREATE'), \
           has_database_privilege(r.oid, current_database(), 'TEMPORARY'), \
           EXISTS (SELECT 1 FROM pg_namespace n WHERE has_schema_privilege(r.oid, n.oid, 'CREATE')), \
           has_schema_privilege(r.oid, 'petstore_registry', 'USAGE'), \
           r.rolname = current_user \
         FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *conn)
    .await
    .map_err(Postgres::classify)?
    .ok_or_else(|| {
        DbError::Unavailable(format!(
            "no database role {role} (DB_COMPONENT_USER): create it with k8s/components/postgres/database-roles.sql"
        ))
    })?;
    let problems = [
        "is a superuser",
        "may create roles",
        "may create databases",
        "may replicate",
        "bypasses row-level security",
        "is a member of another role",
        "may create schemas in the database",
        "may create temporary tables",
        "may create objects in a schema",
        "may reach the registry's schema",
        "is the service's own role",
    ];
    let wrong: Vec<&str> = problems
        .iter()
        .enumerate()
        .filter_map(|(i, problem)| row.try_get::<bool, _>(i).unwrap_or(true).then_some(*problem))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(DbError::Unavailable(format!(
            "the component role {role} {}: components would reach beyond their tables \
             (see k8s/components/postgres/database-roles.sql)",
            wrong.join(", ")
        )))
    }
}

/// `name` as a quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_quoted_whatever_they_hold() {
        assert_eq!(super::quote("petstore_component"), "\"petstore_component\"");
        assert_eq!(super::quote("a\"; DROP TABLE pets; --"), "\"a\"\"; DROP TABLE pets; --\"");
    }
}
