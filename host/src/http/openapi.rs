//! The served OpenAPI document: `host/openapi.json`, with this deployment's
//! own settings filled in (page sizes, `API_VERSION`), so that what a client
//! reads is what this service does.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::{Value, json};

use super::App;
use super::health::answered;

/// The document as kept in the repository.
const DOCUMENT: &str = include_str!("../../openapi.json");

/// The settings the document states.
pub struct Settings<'a> {
    pub api_version: &'a str,
    pub pagination_limit: u32,
    pub pagination_max: u32,
}

/// `GET /api/v1/openapi.json`: the document made at start.
pub async fn serve(State(app): State<Arc<App>>) -> Response {
    let mut resp = app.openapi.clone().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    answered(resp, "/api/v1/openapi.json")
}

/// The document to serve, as JSON text.
pub fn document(settings: &Settings) -> Result<String, serde_json::Error> {
    let mut doc: Value = serde_json::from_str(DOCUMENT)?;
    doc["info"]["version"] = json!(settings.api_version);
    let limit = &mut doc["components"]["parameters"]["Limit"];
    limit["schema"]["maximum"] = json!(settings.pagination_max);
    limit["schema"]["default"] = json!(settings.pagination_limit);
    limit["description"] = json!(format!(
        "Page size: 1 to {} (`PAGINATION_MAX`); {} (`PAGINATION_LIMIT`) when left out",
        settings.pagination_max, settings.pagination_limit
    ));
    serde_json::to_string(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_the_configured_page_sizes_and_version() {
        let text = document(&Settings { api_version: "2.3.4", pagination_limit: 7, pagination_max: 50 }).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["info"]["version"], "2.3.4");
        let limit = &doc["components"]["parameters"]["Limit"]["schema"];
        assert_eq!((limit["maximum"].as_u64(), limit["default"].as_u64()), (Some(50), Some(7)));
    }
}
