//! The Pet Store's records and the rules every stored value obeys, in one
//! place: the handler components enforce them on requests, and the host's
//! backup import enforces them on files. No dependencies (serde is an
//! option, for the records).
//!
//! Text rules: a value has no NUL (U+0000), which PostgreSQL cannot store,
//! and is counted in characters. Names are trimmed of Unicode white space
//! (`char::is_whitespace`) before they are counted and stored; tags are taken
//! exactly as sent and may not start or end with white space, so two tags
//! that differ only by it cannot both be stored as one.

use std::ops::RangeInclusive;

/// A pet's name: 1 to this many characters, trimmed.
pub const NAME_MAX: usize = 100;
/// A pet's species: 1 to this many characters, trimmed.
pub const SPECIES_MAX: usize = 50;
/// One tag: 1 to this many characters, unpadded.
pub const TAG_MAX: usize = 30;
/// Tags per pet, all distinct (case-sensitive).
pub const TAGS_MAX: usize = 10;
/// A closed set of statuses, each written as one word: the enum, every
/// value in order (`ALL`), its text both ways, and the texts as an array.
macro_rules! statuses {
    ($(#[$doc:meta])* $name:ident, $texts:ident, $all_doc:literal: $($variant:ident = $text:literal),+ $(,)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            #[doc = $all_doc]
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// As the API and the database write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|s| s.as_str() == text)
            }
        }

        impl From<$name> for &'static str {
            fn from(status: $name) -> &'static str {
                status.as_str()
            }
        }

        #[doc = concat!("[`", stringify!($name), "::ALL`] as written.")]
        pub const $texts: &[&str] = &[$($text),+];
    };
}

statuses!(
    /// A pet's status.
    PetStatus, PET_STATUSES, "Every status; the first is the default.":
    Available = "available",
    Pending = "pending",
    Sold = "sold",
);

statuses!(
    /// An order's status, in the only order it may move (skipping is allowed).
    OrderStatus, ORDER_STATUSES, "Every status, in their order; a new order starts at the first.":
    Placed = "placed",
    Approved = "approved",
    Delivered = "delivered",
);

/// Items in one order.
pub const QUANTITY: RangeInclusive<i64> = 1..=100;
/// The quantity of an order that names none.
pub const DEFAULT_QUANTITY: i64 = 1;

/// The columns of a pet's row (table `pets`), in the order every reader of
/// a row takes them.
pub const PET_COLUMNS: &str = "id, name, species, tags, status, created_at, updated_at";
/// The columns of an order's row (table `orders`), likewise.
pub const ORDER_COLUMNS: &str = "id, pet_id, quantity, status, created_at, updated_at";

/// A row's columns, read by position: what the host's storage and the
/// handlers' database interface each give, so that a row becomes a record
/// in one place ([`Pet::from_row`], [`Order::from_row`]).
pub trait Columns {
    type Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A pet's tags, stored as a JSON array in the client's order.
    fn tags(&self, i: usize) -> Result<Vec<String>, Self::Error>;
}

/// A pet as stored and answered.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct Pet {
    pub id: i64,
    pub name: String,
    pub species: String,
    pub tags: Vec<String>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An order as stored and answered.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct Order {
    pub id: i64,
    /// `None` once a pet whose orders were all delivered has been deleted.
    pub pet_id: Option<i64>,
    pub quantity: i64,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Pet {
    /// A row of [`PET_COLUMNS`].
    pub fn from_row<C: Columns>(row: &C) -> Result<Pet, C::Error> {
        Ok(Pet {
            id: row.int(0)?,
            name: row.text(1)?,
            species: row.text(2)?,
            tags: row.tags(3)?,
            status: row.text(4)?,
            created_at: row.text(5)?,
            updated_at: row.text(6)?,
        })
    }
}

impl Order {
    /// A row of [`ORDER_COLUMNS`].
    pub fn from_row<C: Columns>(row: &C) -> Result<Order, C::Error> {
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

/// What surrounding white space does to a text value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Trimmed away before the length is counted (names, species).
    Trimmed,
    /// Refused: the value is taken exactly as sent (tags).
    Refused,
}

/// Why a text value breaks its rule; the message reads after a field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Nul,
    Padded,
    Length { max: usize, padding: Padding },
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Nul => write!(f, "must not contain the NUL character (U+0000)"),
            TextError::Padded => write!(f, "must not start or end with white space"),
            TextError::Length { max, padding: Padding::Trimmed } => {
                write!(f, "must be 1 to {max} characters after trimming")
            }
            TextError::Length { max, padding: Padding::Refused } => write!(f, "must be 1 to {max} characters"),
        }
    }
}

/// The value to store for `text`, 1..=`max` characters under `padding`.
pub fn text(text: &str, max: usize, padding: Padding) -> Result<&str, TextError> {
    if text.contains('\0') {
        return Err(TextError::Nul);
    }
    let trimmed = text.trim();
    if padding == Padding::Refused && trimmed.len() != text.len() {
        return Err(TextError::Padded);
    }
    let len = trimmed.chars().count();
    if len == 0 || len > max {
        return Err(TextError::Length { max, padding });
    }
    Ok(trimmed)
}

/// Whether `s` is a time as the service writes them: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn is_timestamp(s: &str) -> bool {
    // A digit where the pattern has `d`, that very character elsewhere.
    const PATTERN: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    s.len() == PATTERN.len()
        && s.bytes().zip(PATTERN).all(|(c, &p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_counted_in_characters() {
        assert_eq!(text("  Rex\u{3000}", NAME_MAX, Padding::Trimmed), Ok("Rex"));
        assert_eq!(text(&"é".repeat(100), NAME_MAX, Padding::Trimmed).map(str::len), Ok(200));
        assert!(text(&"é".repeat(101), NAME_MAX, Padding::Trimmed).is_err());
        assert!(matches!(text(" \t ", NAME_MAX, Padding::Trimmed), Err(TextError::Length { .. })));
        assert_eq!(text("a\0b", NAME_MAX, Padding::Trimmed), Err(TextError::Nul));
    }

    #[test]
    fn tags_are_taken_as_sent() {
        assert_eq!(text("a b", TAG_MAX, Padding::Refused), Ok("a b"));
        assert_eq!(text(" a", TAG_MAX, Padding::Refused), Err(TextError::Padded));
        assert_eq!(text("a\n", TAG_MAX, Padding::Refused), Err(TextError::Padded));
        assert_eq!(text("\u{1c}", TAG_MAX, Padding::Refused), Ok("\u{1c}"), "not White_Space");
    }

    #[test]
    fn statuses_are_read_as_written_and_orders_rank_in_their_order() {
        let orders: Vec<_> = ORDER_STATUSES.iter().map(|s| OrderStatus::parse(s)).collect();
        assert_eq!(orders, OrderStatus::ALL.iter().copied().map(Some).collect::<Vec<_>>());
        let pets: Vec<_> = PET_STATUSES.iter().map(|s| PetStatus::parse(s)).collect();
        assert_eq!(pets, PetStatus::ALL.iter().copied().map(Some).collect::<Vec<_>>());
        assert_eq!((OrderStatus::parse("shipped"), PetStatus::parse("Sold")), (None, None));
        assert!(OrderStatus::Placed < OrderStatus::Approved && OrderStatus::Approved < OrderStatus::Delivered);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_second() {
        assert!(is_timestamp("2026-11-30T06:11:00Z"));
        assert!(!is_timestamp("2026-11-30T06:11:00+00:00"));
        assert!(!is_timestamp("2026-11-30 06:11:00Z"));
    }
}
