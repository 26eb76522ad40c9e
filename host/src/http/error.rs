//! The host's own error answers, and the one place where every host-side
//! failure becomes an HTTP response: `{"error":{"code","message"}}`.
//! Internal detail is logged where it happens, never put in a body. Every
//! error answer, the host's or a component's, leaves with its request's
//! context added here ([`with_context`]).

use axum::body::{Body, HttpBody as _, to_bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use thiserror::Error;

use crate::runtime::InvokeError;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body could not be read (a broken chunked encoding, or the client went away)")]
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
    #[error("the component's signature was refused and nothing changed: {0}")]
    SignatureRejected(String),
    #[error("the version was refused and nothing changed: {0}")]
    VersionConflict(String),
    #[error("too many failed attempts from this address; retry in {0} s")]
    TooManyAttempts(u64),
    #[error("{0}")]
    CanaryConflict(String),
    #[error("{0}")]
    BadParameter(String),
}

impl HttpError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            HttpError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            HttpError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            HttpError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            HttpError::BadBody => (StatusCode::BAD_REQUEST, "invalid_body"),
            HttpError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            HttpError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            HttpError::ComponentFailed => (StatusCode::INTERNAL_SERVER_ERROR, "component_failed"),
            HttpError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            HttpError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            HttpError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            HttpError::AdminDisabled => (StatusCode::NOT_FOUND, "not_found"),
            HttpError::ComponentRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            HttpError::SignatureRejected(_) => (StatusCode::FORBIDDEN, "signature_rejected"),
            HttpError::VersionConflict(_) => (StatusCode::CONFLICT, "conflict"),
            HttpError::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            HttpError::CanaryConflict(_) => (StatusCode::CONFLICT, "conflict"),
            HttpError::BadParameter(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
        }
    }
}

impl From<InvokeError> for HttpError {
    fn from(err: InvokeError) -> Self {
        match err {
            InvokeError::Saturated => HttpError::Unavailable,
            InvokeError::Timeout => HttpError::Timeout,
            InvokeError::Trap(_) => HttpError::ComponentFailed,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        let mut resp = json_response(status, &body);
        match self {
            HttpError::MethodNotAllowed(allow) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::Unavailable => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            HttpError::RequestTimeout(_) | HttpError::PayloadTooLarge(_) => {
                // The rest of the body was not read (and may still come): the
                // connection cannot carry another request, and a client that
                // pooled it would send its next request into a closed socket.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            HttpError::Unauthorized => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                // Refused on its headers: any body is left unread.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            HttpError::TooManyAttempts(wait) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
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

/// An error body is small: one larger than this (or of unknown length) is
/// not one of ours and leaves as it came.
const ERROR_BODY_MAX: u64 = 64 * 1024;

/// An error answer (a 4xx or 5xx whose body is `{"error":{…}}`) with the
/// request's context in its `error`: `request_id` (the `X-Request-Id`
/// header) and, when the request is traced, `trace_id`, so that a client
/// reporting a failure names the log lines and the trace behind it. Any
/// other answer is returned as it is, its body untouched.
pub async fn with_context(resp: Response, request_id: &str, trace_id: Option<String>) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = resp.body().size_hint().upper().is_some_and(|size| size <= ERROR_BODY_MAX);
    if !(resp.status().is_client_error() || resp.status().is_server_error()) || !is_json || !small {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        // The body failed while it was read: what was read cannot be put back.
        return HttpError::Internal.into_response();
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    let Some(error) = value.get_mut("error").and_then(|e| e.as_object_mut()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    error.insert("request_id".into(), request_id.into());
    if let Some(trace_id) = trace_id {
        error.insert("trace_id".into(), trace_id.into());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(value.to_string()))
}
