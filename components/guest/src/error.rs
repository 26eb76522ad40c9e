//! Everything a handler can answer other than success, as one enum; the
//! JSON body of the OpenAPI document (`{"error":{"code","message","details"?}}`) is made
//! from it in [`crate::http`].

/// One field that broke a rule, reported in a 422's `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON.
    InvalidJson(String),
    /// 400: a path or query parameter has the wrong type or range.
    InvalidParameter { name: String, message: String },
    /// 404
    NotFound(String),
    /// 405, with the methods the path does allow.
    MethodNotAllowed(&'static str),
    /// 409: a business rule.
    Conflict(String),
    /// 415: a body that must be JSON was sent as something else; the
    /// content types this method accepts.
    UnsupportedMediaType(&'static str),
    /// 422, one entry per field.
    Validation(Vec<FieldError>),
    /// 422: the database refused a value the field rules let through (a
    /// data exception): the client's fault, never worth retrying.
    InvalidData,
    /// 503: the database is unreachable or too busy; the client may retry.
    Unavailable,
    /// 500: a bug. The cause is logged, never sent.
    Internal,
}

impl ApiError {
    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidParameter { name: name.to_string(), message: message.into() }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// A 422 for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError { field: field.to_string(), message: message.into() }])
    }
}
