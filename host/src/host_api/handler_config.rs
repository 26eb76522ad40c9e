//! The WIT `config` interface: the read-only settings a handler may read
//! (not to be confused with [`crate::config`], the host's own environment).

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
