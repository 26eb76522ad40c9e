//! The `log` interface: a component's events become host log lines carrying
//! the request id, the trace id (when traced) and the component's name.

use super::RequestState;
use super::bindings::petstore::api::log::{Host, Level};

/// Caps what one event may put in the log, so a component cannot flood it.
const MAX_MESSAGE: usize = 2048;
const MAX_FIELDS: usize = 16;

impl Host for RequestState {
    async fn emit(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let message = truncate(&message, MAX_MESSAGE);
        let fields: Vec<String> = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| format!("{}={}", truncate(k, 64), truncate(v, MAX_MESSAGE)))
            .collect();
        let fields = fields.join(" ");
        let (request_id, component) = (&*self.request_id, &*self.component);
        match level {
            Level::Trace => tracing::trace!(target: "component", request_id, component, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "component", request_id, component, fields, "{message}"),
            Level::Info => tracing::info!(target: "component", request_id, component, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "component", request_id, component, fields, "{message}"),
            Level::Error => tracing::error!(target: "component", request_id, component, fields, "{message}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
