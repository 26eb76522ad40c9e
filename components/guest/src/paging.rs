//! Paging: `limit` and `offset` from the query, and the `Link: rel="next"` header.

use crate::bindings::petstore::api::config;
use crate::error::ApiError;
use crate::http::Request;

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    /// `limit` defaults to `PAGINATION_LIMIT` and must be 1..=`PAGINATION_MAX`;
    /// `offset` defaults to 0 and must be ≥ 0.
    pub fn from_request(req: &Request) -> Result<Page, ApiError> {
        let settings = config::get();
        let max = i64::from(settings.pagination_max);
        let limit = match req.query("limit")? {
            None => i64::from(settings.pagination_limit),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(ApiError::invalid_parameter("limit", format!("must be an integer from 1 to {max}"))),
            },
        };
        let offset = match req.query("offset")? {
            None => 0,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => return Err(ApiError::invalid_parameter("offset", "must be an integer of 0 or more")),
            },
        };
        Ok(Page { limit, offset })
    }

    /// The `Link` header value for the next page, present exactly when
    /// `offset + returned < total`; it keeps every other query parameter.
    pub fn next_link(&self, req: &Request, returned: usize, total: i64) -> Option<String> {
        let next = self.offset.saturating_add(returned as i64);
        if next >= total {
            return None;
        }
        let mut query: Vec<String> =
            req.raw_query_without(&["limit", "offset"]).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        query.push(format!("limit={}", self.limit));
        query.push(format!("offset={next}"));
        Some(format!("<{}?{}>; rel=\"next\"", req.path, query.join("&")))
    }
}

/// The body of a page: `{"items":[…],"total":N,"limit":L,"offset":O}`.
#[derive(serde::Serialize)]
pub struct PageBody<T: serde::Serialize> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}
