//! The request and response a handler works with, and [`serve`], which turns
//! a route function's `Result` into the WIT response (an [`ApiError`]
//! becomes the contract's JSON error here, and only here).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bindings::exports::petstore::api::handler as wit;
use crate::bindings::petstore::api::log::Level;
use crate::error::{ApiError, FieldError};

/// What a request's path names under a resource's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The prefix itself (`/api/v1/pets`).
    Collection,
    /// One member (`/api/v1/pets/{id}`), by its id.
    Member(i64),
}

/// A request with its query string split and decoded.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Raw `name=value` pairs as sent, kept to rebuild links.
    raw_query: Vec<(String, String)>,
    /// Decoded pairs; a value that is not usable text keeps the reason, which
    /// becomes a 400 naming the parameter when a handler asks for it.
    query: Vec<(String, Result<String, &'static str>)>,
    /// The `content-type` header, if sent.
    content_type: Option<String>,
    pub body: Vec<u8>,
    pub request_id: String,
}

impl Request {
    fn from_wit(req: wit::Request) -> Self {
        let raw_query: Vec<(String, String)> = req
            .query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        let query = raw_query.iter().map(|(k, v)| (percent_decode(k).unwrap_or_default(), percent_decode(v))).collect();
        let content_type = req.headers.into_iter().find(|(name, _)| name == "content-type").map(|(_, value)| value);
        Request {
            method: req.method,
            path: req.path,
            raw_query,
            query,
            content_type,
            body: req.body,
            request_id: req.request_id,
        }
    }

    /// The first value of a query parameter, decoded; `400 invalid_parameter`
    /// when it is not UTF-8 text or holds a NUL character.
    pub fn query(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.query.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, Ok(value))) => Ok(Some(value)),
            Some((_, Err(why))) => Err(ApiError::invalid_parameter(name, *why)),
        }
    }

    /// The raw query pairs except the named ones, for building links.
    pub fn raw_query_without(&self, names: &[&str]) -> Vec<(String, String)> {
        self.raw_query.iter().filter(|(k, _)| !names.contains(&k.as_str())).cloned().collect()
    }

    /// The path segments after `prefix`, or `None` when the path is not under it.
    /// A trailing slash is ignored: `/api/v1/pets/` is `/api/v1/pets`.
    pub fn segments_after(&self, prefix: &str) -> Option<Vec<&str>> {
        let rest = self.path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(rest.split('/').filter(|s| !s.is_empty()).collect())
    }

    /// What the path names under a resource's `prefix`: the collection, or
    /// one member by its id. `404` when the path is not under `prefix` or
    /// goes deeper than a member, `400 invalid_parameter` when the id is not
    /// one (whatever the method: the path is judged before it).
    pub fn target(&self, prefix: &str) -> Result<Target, ApiError> {
        match self.segments_after(prefix).as_deref() {
            Some([]) => Ok(Target::Collection),
            Some([id]) => crate::validate::path_id(id).map(Target::Member),
            _ => Err(ApiError::not_found("route")),
        }
    }

    /// The body as a JSON object: `415` unless it was sent as JSON (`PATCH`
    /// may send a merge patch), `400 invalid_json` when it is not JSON, `422`
    /// when it is JSON but not an object. Checked here, after routing, so
    /// that a method the path does not allow is a 405 whatever its body.
    pub fn json_object(&self) -> Result<Map<String, Value>, ApiError> {
        self.require_json_content_type()?;
        let value: Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(ApiError::invalid_field("body", "must be a JSON object")),
        }
    }

    fn require_json_content_type(&self) -> Result<(), ApiError> {
        let patch = self.method == "PATCH";
        let mime = self.content_type.as_deref().map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match mime.as_deref() {
            Some("application/json") => Ok(()),
            Some("application/merge-patch+json") if patch => Ok(()),
            _ if patch => Err(ApiError::UnsupportedMediaType("application/json or application/merge-patch+json")),
            _ => Err(ApiError::UnsupportedMediaType("application/json")),
        }
    }
}

/// An answer under construction.
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(body) => Response {
                status,
                headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
                body,
            },
            // Serializing our own plain structs cannot fail; answer 500 rather than panic.
            Err(_) => Response { status: 500, headers: Vec::new(), body: Vec::new() },
        }
    }

    /// An answer without a body, e.g. `204`.
    pub fn empty(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn into_wit(self) -> wit::Response {
        wit::Response { status: self.status, headers: self.headers, body: self.body }
    }
}

/// Run a route function for a WIT request and turn its result into the WIT response.
pub fn serve(req: wit::Request, route: impl FnOnce(&Request) -> Result<Response, ApiError>) -> wit::Response {
    let req = Request::from_wit(req);
    match route(&req) {
        Ok(resp) => resp.into_wit(),
        Err(err) => {
            if matches!(err, ApiError::Internal | ApiError::Unavailable) {
                crate::log(Level::Warn, "request failed", &[("error", &format!("{err:?}"))]);
            }
            Response::from(err).into_wit()
        }
    }
}

impl From<ApiError> for Response {
    fn from(err: ApiError) -> Response {
        let (status, code, message, details) = match err {
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

fn error_body(code: &str, message: &str, details: Option<&[FieldError]>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(details) = details {
        error["details"] = details.iter().map(|d| json!({ "field": d.field, "message": d.message })).collect();
    }
    json!({ "error": error })
}

/// Decode `%XX` escapes and `+` (as a space) in a query component. The
/// result must be UTF-8 without NUL: the reason otherwise.
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    let text = String::from_utf8(out).map_err(|_| "must be UTF-8 text (percent-encoded)")?;
    if text.contains('\0') {
        return Err("must not contain the NUL character (%00)");
    }
    Ok(text)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(percent_decode("a%20b+c"), Ok("a b c".into()));
        assert_eq!(percent_decode("%C3%A9"), Ok("é".into()));
        assert_eq!(percent_decode("100%"), Ok("100%".into()));
        assert_eq!(percent_decode("%zz"), Ok("%zz".into()));
    }

    #[test]
    fn refuses_what_is_not_text() {
        assert!(percent_decode("a%00b").is_err(), "NUL");
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
        assert!(percent_decode("%C3").is_err(), "a cut sequence");
    }
}
