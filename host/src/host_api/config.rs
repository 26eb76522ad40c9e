//! The `config` interface: read-only handler settings.

use super::RequestState;
use super::bindings::petstore::api::config::{Host, Settings};

impl Host for RequestState {
    async fn get(&mut self) -> Settings {
        let s = &self.shared.settings;
        Settings {
            api_version: s.api_version.clone(),
            pagination_limit: s.pagination_limit,
            pagination_max: s.pagination_max,
        }
    }
}
