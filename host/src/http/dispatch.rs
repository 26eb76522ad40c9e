//! Hands a request under `/api/v1` to the component its route names: reads
//! the body within the limit, runs the component and turns its answer into
//! an HTTP response. The content type is the component's to check, after it
//! has routed the method (a method a path does not allow is a 405 whatever
//! its body).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use super::error::HttpError;
use super::observe::Answered;
use super::{App, BODY_LIMIT};
use crate::host_api::bindings::exports::petstore::api::handler as wit;
use crate::runtime::LoadedComponent;

pub async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let Some(route) = app.routes.resolve(req.uri().path()) else {
        let mut resp = HttpError::NotFound.into_response();
        resp.extensions_mut().insert(Answered { route: "unmatched".into(), component: None });
        return resp;
    };
    let answered = Answered { route: route.prefix.clone(), component: Some(Arc::from(route.component.as_str())) };
    let Some(component) = app.runtime.pick(&route.component) else {
        let mut resp = HttpError::Unavailable.into_response();
        resp.extensions_mut().insert(answered);
        return resp;
    };
    let mut resp = match run(&app, &component, req).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(),
    };
    // Which version answered (the stable one or a canary), also on its failures.
    if let Ok(version) = HeaderValue::from_maybe_shared(component.version.clone()) {
        resp.headers_mut().insert(X_COMPONENT_VERSION, version);
    }
    resp.extensions_mut().insert(answered);
    resp
}

/// Names the digest of the component version that answered.
const X_COMPONENT_VERSION: HeaderName = HeaderName::from_static("x-component-version");

async fn run(app: &App, component: &Arc<LoadedComponent>, req: Request) -> Result<Response, HttpError> {
    let (parts, body) = req.into_parts();
    let request_id =
        parts.headers.get(super::request_id::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = tokio::time::timeout(app.body_timeout, read_body(&parts.headers, body))
        .await
        .map_err(|_| HttpError::RequestTimeout(app.body_timeout.as_millis()))??;
    let request = wit::Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        request_id,
    };
    let answer = app.runtime.invoke(component, request).await.inspect_err(|err| {
        tracing::warn!(component = &*component.name, error = %err, "component did not answer");
    })?;
    into_http(&component.name, answer)
}

/// Read at most [`BODY_LIMIT`] bytes, whether or not `Content-Length` was sent.
async fn read_body(headers: &http::HeaderMap, body: Body) -> Result<Bytes, HttpError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(HttpError::PayloadTooLarge(BODY_LIMIT));
    }
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(HttpError::PayloadTooLarge(BODY_LIMIT))
        }
        Err(_) => Err(HttpError::BadBody),
    }
}

/// The component's answer as an HTTP response; a malformed one is the
/// component's failure, not the client's.
fn into_http(component: &str, answer: wit::Response) -> Result<Response, HttpError> {
    let bad = |what: &str| {
        tracing::warn!(component, what, "component answered with an invalid response");
        HttpError::ComponentFailed
    };
    let status = StatusCode::from_u16(answer.status).map_err(|_| bad("status"))?;
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in answer.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_str(&value).map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    Ok(resp)
}
