//! The error answers of API.md: `{"error":{"code","message","details"?}}`.

use serde_json::json;

use crate::http::Response;

/// One field that broke a rule, reported in a 422's `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Everything a handler can answer other than success.
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

    pub fn into_response(self) -> Response {
        let (status, code, message, details) = match self {
            ApiError::InvalidJson(m) => (400, "invalid_json", m, None),
            ApiError::InvalidParameter { name, message } => {
                (400, "invalid_parameter", format!("{name}: {message}"), None)
            }
            ApiError::NotFound(m) => (404, "not_found", m, None),
            ApiError::MethodNotAllowed(allow) => {
                let body = error_body("method_not_allowed", "method not allowed on this path", None);
                return Response::json(405, &body).header("allow", allow);
            }
            ApiError::Conflict(m) => (409, "conflict", m, None),
            ApiError::UnsupportedMediaType(accepted) => {
                (415, "unsupported_media_type", format!("the body must be sent as {accepted}"), None)
            }
            ApiError::Validation(d) => {
                (422, "validation_failed", "the request body breaks field rules".into(), Some(d))
            }
            ApiError::InvalidData => {
                (422, "validation_failed", "the request holds a value the database cannot store".into(), None)
            }
            ApiError::Unavailable => {
                let body = error_body("unavailable", "the database is unavailable; retry shortly", None);
                return Response::json(503, &body).header("retry-after", "1");
            }
            ApiError::Internal => (500, "internal", "internal error".into(), None),
        };
        Response::json(status, &error_body(code, &message, details.as_deref()))
    }
}

fn error_body(code: &str, message: &str, details: Option<&[FieldError]>) -> serde_json::Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(details) = details {
        error["details"] = details.iter().map(|d| json!({ "field": d.field, "message": d.message })).collect();
    }
    json!({ "error": error })
}
