//! The host's own error answers, and the one place where every host-side
//! failure becomes an HTTP response: `{"error":{"code","message"}}`.
//! Internal detail is logged where it happens, never put in a body.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use thiserror::Error;

use crate::runtime::InvokeError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body could not be read")]
    BadBody,
    #[error("the request's body did not arrive within {0} ms")]
    RequestTimeout(u128),
    #[error("no healthy handler for this route; retry shortly")]
    Unavailable,
    #[error("the handler failed")]
    ComponentFailed,
    #[error("the handler did not answer in time")]
    Timeout,
    #[error("internal error")]
    Internal,
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("the admin API is disabled: set ADMIN_TOKEN to enable it")]
    AdminDisabled,
    #[error("the component was refused and the running version keeps serving: {0}")]
    ComponentRejected(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BadBody => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::ComponentFailed => (StatusCode::INTERNAL_SERVER_ERROR, "component_failed"),
            ApiError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::AdminDisabled => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ComponentRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(err: InvokeError) -> Self {
        match err {
            InvokeError::Saturated => ApiError::Unavailable,
            InvokeError::Timeout => ApiError::Timeout,
            InvokeError::Trap(_) => ApiError::ComponentFailed,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut resp = json_response(status, &body);
        match self {
            ApiError::MethodNotAllowed(allow) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unavailable => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may still come: this connection is done.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthorized => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// A JSON answer with the contract's content type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}
