//! The shared guest library every Pet Store handler component links.
//!
//! # Layout
//! - [`bindings`]: the `pet-handler` world, generated once here.
//! - [`handler!`]: exports a route function as the component's handler.
//! - [`http`]: the request/response wrappers and [`serve`], the adapter from
//!   the WIT `handle` export to a `Result<Response, ApiError>` route function.
//! - [`error`]: the error answers of the OpenAPI document, as one enum.
//! - [`validate`]: field rules that collect `details` for a 422.
//! - [`db`]: the database and transaction calls behind one trait, rows read
//!   into records ([`db::FromRow`]), and database errors mapped to answers.
//! - [`records`]: pets and orders as rows (their columns) and as JSON.
//! - [`paging`]: `limit` / `offset`, filtered listings and the `Link` header.
//! - [`time`]: RFC 3339 timestamps from the WASI wall clock.

pub mod db;
pub mod error;
pub mod http;
pub mod paging;
pub mod records;
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
pub use error::ApiError;
pub use http::{Request, Response, Target, serve};
pub use petstore_model as model;

/// Export a route function, `fn(&Request) -> Result<Response, ApiError>`,
/// as this component's `handler`:
///
/// ```text
/// fn route(req: &petstore_guest::Request) -> Result<petstore_guest::Response, petstore_guest::ApiError> { … }
/// petstore_guest::handler!(route);
/// ```
#[macro_export]
macro_rules! handler {
    ($route:path) => {
        struct Component;

        impl $crate::bindings::exports::petstore::api::handler::Guest for Component {
            fn handle(
                req: $crate::bindings::exports::petstore::api::handler::Request,
            ) -> $crate::bindings::exports::petstore::api::handler::Response {
                $crate::serve(req, $route)
            }
        }

        $crate::export_handler!(Component);
    };
}

/// Emit a structured log line through the host (it adds the request id).
pub fn log(level: bindings::petstore::api::log::Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    bindings::petstore::api::log::emit(level, message, &fields);
}
