//! Pets and orders as the handlers read them from rows and bind them as
//! parameters. The records, their columns and how a row becomes one (and
//! one becomes parameters) are `petstore_model`'s; this is the handlers'
//! side of both.

pub use petstore_model::{ORDER_COLUMNS, PET_COLUMNS, PET_FIELD_COLUMNS};
use petstore_model::{Order, Pet};

use crate::db::{FromRow, Row, Value};
use crate::error::ApiError;

impl petstore_model::Columns for Row<'_> {
    type Error = ApiError;

    fn int(&self, i: usize) -> Result<i64, ApiError> {
        Row::int(self, i)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, ApiError> {
        Row::opt_int(self, i)
    }

    fn text(&self, i: usize) -> Result<String, ApiError> {
        Row::text(self, i)
    }

    fn tags(&self, i: usize) -> Result<Vec<String>, ApiError> {
        serde_json::from_str(&Row::text(self, i)?).map_err(|_| ApiError::Internal)
    }
}

petstore_model::params!(
    /// Parameters for a statement, bound in order by a record's `bind`.
    pub Params(Value), ApiError = |_| ApiError::Internal
);

impl FromRow for Pet {
    fn from_row(row: Row<'_>) -> Result<Pet, ApiError> {
        Pet::from_row(&row)
    }
}

impl FromRow for Order {
    fn from_row(row: Row<'_>) -> Result<Order, ApiError> {
        Order::from_row(&row)
    }
}

impl crate::paging::Keyed for Pet {
    fn id(&self) -> i64 {
        self.id
    }
}

impl crate::paging::Keyed for Order {
    fn id(&self) -> i64 {
        self.id
    }
}
