//! Talking to the server under test: requests, the answers read whole, and
//! the metrics port's metrics.

use serde_json::Value;

use super::server::Server;

impl Server {
    /// Scrape `/metrics`: each sample line as (series, value).
    pub async fn metrics(&self) -> std::collections::HashMap<String, f64> {
        // A connection of its own each time: a pooled one may be closed by
        // the server's keep-alive timeout just as it is reused.
        let scrape = self.client.get(self.metrics_url("/metrics")).header("connection", "close").send();
        let text = scrape.await.expect("scrape").text().await.expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.client.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Answer::read(self.client.delete(self.url(path)).send().await.expect("DELETE")).await
    }

    /// Send `body` as JSON with `method`.
    pub async fn send(&self, method: &str, path: &str, body: &Value) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, body).await
    }

    /// Upload a new version of component `name` through the admin API.
    pub async fn upload_component(&self, name: &str, bytes: Vec<u8>, token: Option<&str>) -> Answer {
        self.upload_component_with(name, bytes, token, &[]).await
    }

    /// [`Server::upload_component`] with extra headers (a signature, the uploader).
    pub async fn upload_component_with(
        &self,
        name: &str,
        bytes: Vec<u8>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.client.put(self.admin_url(&format!("/admin/components/{name}"))).body(bytes);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Answer::read(req.send().await.expect("PUT component")).await
    }

    /// The admin API's component list (token `token`).
    pub async fn admin_components(&self, token: &str) -> Value {
        let req = self.client.get(self.admin_url("/admin/components")).bearer_auth(token);
        Answer::read(req.send().await.expect("GET components")).await.body
    }

    /// Create a pet and return its id.
    pub async fn create_pet(&self, body: &Value) -> i64 {
        let a = self.post("/api/v1/pets", body).await;
        assert_eq!(a.status, 201, "create pet: {}", a.body);
        a.body["id"].as_i64().expect("id")
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, body, text }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert the contract's error shape and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["error"]["code"], code, "{}", self.text);
        assert!(self.body["error"]["message"].is_string(), "{}", self.text);
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "error without JSON content type: {:?}",
            self.header("content-type")
        );
    }
}
