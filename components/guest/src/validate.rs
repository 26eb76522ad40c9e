//! Field rules for JSON bodies. A [`Validator`] collects every broken rule so
//! one 422 names all the fields at once.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

#[derive(Default)]
pub struct Validator {
    details: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.details.push(FieldError { field: field.to_string(), message: message.into() });
    }

    /// `Ok(())` when no rule broke, else `422` with every detail.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.details.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.details)) }
    }

    /// A string of `min..=max` characters after trimming; returns it trimmed.
    /// `None` when the value is absent (the caller decides if that is allowed).
    pub fn text(&mut self, obj: &Map<String, Value>, field: &str, max: usize, required: bool) -> Option<String> {
        match obj.get(field) {
            None if required => {
                self.fail(field, "is required");
                None
            }
            None => None,
            Some(value) => self.text_value(field, value, max),
        }
    }

    /// A string value of 1..=max characters after trimming.
    pub fn text_value(&mut self, field: &str, value: &Value, max: usize) -> Option<String> {
        let Some(s) = value.as_str() else {
            self.fail(field, "must be a string");
            return None;
        };
        let trimmed = s.trim();
        let len = trimmed.chars().count();
        if len == 0 || len > max {
            self.fail(field, format!("must be 1 to {max} characters after trimming"));
            return None;
        }
        Some(trimmed.to_string())
    }

    /// One of `allowed`; `None` when absent.
    pub fn one_of(&mut self, obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> Option<String> {
        let value = obj.get(field)?;
        match value.as_str() {
            Some(s) if allowed.contains(&s) => Some(s.to_string()),
            _ => {
                self.fail(field, format!("must be one of: {}", allowed.join(", ")));
                None
            }
        }
    }

    /// An integer in `min..=max`; `None` when absent.
    pub fn integer(&mut self, obj: &Map<String, Value>, field: &str, min: i64, max: i64) -> Option<i64> {
        let value = obj.get(field)?;
        match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.fail(field, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }
}

/// A path id: digits only, positive, fits in 64 bits; else `400 invalid_parameter`
/// (`abc`, `1.5`, `1e3`, `0`, `-1` and ids beyond 64 bits alike).
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::invalid_parameter("id", "must be a positive 64-bit integer")),
    }
}
