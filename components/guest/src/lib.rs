//! The shared guest library every Pet Store handler component links.
//!
//! # Layout
//! - [`bindings`]: the `pet-handler` world, generated once here; components
//!   export themselves with [`export_handler!`].
//! - [`http`]: the request/response wrappers and [`serve`], the adapter from the
//!   WIT `handle` export to a `Result<Response, ApiError>` route function.
//! - [`error`]: the error answers of API.md, as one enum.
//! - [`validate`]: field rules that collect `details` for a 422.
//! - [`paging`]: `limit` / `offset` and the `Link` header.
//! - [`db`]: the database and transaction calls behind one trait, with typed
//!   column readers.
//! - [`time`]: RFC 3339 timestamps from the WASI wall clock.

pub mod db;
pub mod error;
pub mod http;
pub mod paging;
pub mod time;
pub mod validate;

pub mod bindings {
    //! Generated from `wit/petstore.wit`.
    wit_bindgen::generate!({
        path: "../../wit",
        world: "pet-handler",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "petstore_guest::bindings",
    });
}

pub use bindings::export_handler;
pub use bindings::exports::petstore::api::handler::Guest as Handler;
pub use error::ApiError;
pub use http::{Request, Response, serve};

/// Emit a structured log line through the host (it adds the request id).
pub fn log(level: bindings::petstore::api::log::Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    bindings::petstore::api::log::emit(level, message, &fields);
}
