//! How PostgreSQL's values and errors become the database interface's:
//! parameters bound, rows decoded by column type, SQLSTATEs sorted by whose
//! fault they are.

use sqlx::postgres::{PgQueryResult, PgRow, PgTypeInfo};
use sqlx::{Row, TypeInfo, ValueRef};

use super::Postgres;
use crate::storage::sql::{self, Dialect};
use crate::storage::{DbError, ErrorClass, Value};

/// A NULL parameter sent without a type (OID 0, "unspecified"), so that
/// PostgreSQL infers it from where it stands: NULL fits a column of any
/// type (a NULL sent as text is refused by a `bytea` or `bigint` column).
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;

    fn bind(sql: String, params: Vec<Value>) -> sql::Bound<sqlx::Postgres> {
        sql::bind::<sqlx::Postgres, UntypedNull>(sql, params)
    }

    /// Decode by each column's type: every integer width becomes a 64-bit
    /// integer, as SQLite answers.
    fn decode_row(row: &PgRow) -> Result<Vec<Value>, DbError> {
        (0..row.len()).map(|i| decode(row, i)).collect()
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn error(err: sqlx::Error) -> DbError {
        Self::classify(err)
    }
}

fn decode(row: &PgRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(Postgres::classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    let value = match type_name.as_str() {
        "INT8" => row.try_get(i).map(Value::Integer),
        "INT4" => row.try_get::<i32, _>(i).map(|n| Value::Integer(n.into())),
        "INT2" => row.try_get::<i16, _>(i).map(|n| Value::Integer(n.into())),
        "FLOAT8" => row.try_get(i).map(Value::Real),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|f| Value::Real(f.into())),
        "BOOL" => row.try_get(i).map(Value::Boolean),
        "BYTEA" => row.try_get(i).map(Value::Blob),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => row.try_get(i).map(Value::Text),
        other => {
            return Err(DbError::Other(format!(
                "column {i} has a type the database interface does not carry: {other}"
            )));
        }
    };
    value.map_err(Postgres::classify)
}

/// PostgreSQL's SQLSTATE codes by class (Appendix A of its manual).
pub(super) fn class_of(code: &str) -> ErrorClass {
    match code {
        // Serialization failure, deadlock: the transaction was rolled back
        // and may simply be run again.
        "40001" | "40P01" => ErrorClass::Contention,
        // A deferred constraint checked at commit.
        "40002" => ErrorClass::Constraint,
        // Lock not available, object in use, statement timeout.
        "55P03" | "55006" | "57014" => ErrorClass::Busy,
        // Insufficient privilege: the component role may not do that.
        "42501" => ErrorClass::Forbidden,
        _ => match code.get(..2) {
            Some("23") => ErrorClass::Constraint,
            // Data exception (22: NUL in text, out of range, bad cast…) and
            // program limit exceeded (54: a value too large to index).
            Some("22" | "54") => ErrorClass::InvalidData,
            // Connection exception, insufficient resources (disk, memory,
            // connections), operator intervention (shutdown, crash
            // recovery), system error.
            Some("08" | "53" | "57" | "58") => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sort_by_whose_fault_they_are() {
        for (code, class) in [
            ("23505", ErrorClass::Constraint),
            ("23514", ErrorClass::Constraint),
            ("22021", ErrorClass::InvalidData),
            ("22003", ErrorClass::InvalidData),
            ("22P02", ErrorClass::InvalidData),
            ("54000", ErrorClass::InvalidData),
            ("40001", ErrorClass::Contention),
            ("40P01", ErrorClass::Contention),
            ("57014", ErrorClass::Busy),
            ("55P03", ErrorClass::Busy),
            ("42501", ErrorClass::Forbidden),
            ("08006", ErrorClass::Unavailable),
            ("53300", ErrorClass::Unavailable),
            ("57P01", ErrorClass::Unavailable),
            ("42P01", ErrorClass::Other),
            ("25P02", ErrorClass::Other),
        ] {
            assert_eq!(class_of(code), class, "{code}");
        }
    }
}
