//! `X-Request-Id`: a client's id is kept when it is 1–128 visible ASCII
//! characters; otherwise it is dropped here, before tower-http's
//! `SetRequestId` makes a new one.

use axum::extract::Request;
use http::HeaderName;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Remove an `X-Request-Id` the contract says not to echo.
pub async fn drop_invalid(mut req: Request) -> Request {
    let valid = req.headers().get(&X_REQUEST_ID).is_none_or(|v| is_valid(v.as_bytes()));
    if !valid {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    req
}

fn is_valid(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_visible_ascii_up_to_128() {
        assert!(is_valid(b"abc-123"));
        assert!(is_valid(&[b'x'; 128]));
        assert!(!is_valid(&[b'x'; 129]));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid("é".as_bytes()));
    }
}
