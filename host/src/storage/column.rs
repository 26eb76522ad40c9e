//! Typed reads of one column of a row, for the host's own queries (the
//! registry, backups): a value of another type than expected is a
//! `DbError::Other` naming the column.

use super::{DbError, Value};

pub fn int(row: &[Value], i: usize) -> Result<i64, DbError> {
    match row.get(i) {
        Some(Value::Integer(n)) => Ok(*n),
        other => Err(unexpected("an integer", i, other)),
    }
}

pub fn text(row: &[Value], i: usize) -> Result<String, DbError> {
    match row.get(i) {
        Some(Value::Text(s)) => Ok(s.clone()),
        other => Err(unexpected("text", i, other)),
    }
}

/// An integer, or `None` for NULL.
pub fn optional_int(row: &[Value], i: usize) -> Result<Option<i64>, DbError> {
    match row.get(i) {
        Some(Value::Null) => Ok(None),
        _ => int(row, i).map(Some),
    }
}

/// Text, or `None` for NULL.
pub fn optional_text(row: &[Value], i: usize) -> Result<Option<String>, DbError> {
    match row.get(i) {
        Some(Value::Null) => Ok(None),
        _ => text(row, i).map(Some),
    }
}

/// Bytes, or `None` for NULL.
pub fn optional_blob(row: &[Value], i: usize) -> Result<Option<Vec<u8>>, DbError> {
    match row.get(i) {
        Some(Value::Null) => Ok(None),
        Some(Value::Blob(bytes)) => Ok(Some(bytes.clone())),
        other => Err(unexpected("bytes", i, other)),
    }
}

fn unexpected(expected: &str, i: usize, found: Option<&Value>) -> DbError {
    DbError::Other(format!("column {i}: expected {expected}, found {found:?}"))
}
