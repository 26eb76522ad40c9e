//! Pets and orders as the handlers read them from rows: the columns each
//! query selects, in order, and the [`FromRow`] that reads them. The records
//! themselves, and their rules, are `petstore_model`'s.

pub use petstore_model::{ORDER_COLUMNS, PET_COLUMNS};
use petstore_model::{Order, Pet};

use crate::db::{FromRow, Row};
use crate::error::ApiError;

impl FromRow for Pet {
    fn from_row(row: Row<'_>) -> Result<Pet, ApiError> {
        Ok(Pet {
            id: row.int(0)?,
            name: row.text(1)?,
            species: row.text(2)?,
            // Stored as a JSON array, in the client's order.
            tags: serde_json::from_str(&row.text(3)?).map_err(|_| ApiError::Internal)?,
            status: row.text(4)?,
            created_at: row.text(5)?,
            updated_at: row.text(6)?,
        })
    }
}

impl FromRow for Order {
    fn from_row(row: Row<'_>) -> Result<Order, ApiError> {
        Ok(Order {
            id: row.int(0)?,
            pet_id: row.opt_int(1)?,
            quantity: row.int(2)?,
            status: row.text(3)?,
            created_at: row.text(4)?,
            updated_at: row.text(5)?,
        })
    }
}
