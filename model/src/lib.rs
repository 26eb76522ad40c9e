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

/// A row's columns, read by position: what the host's storage and the
/// handlers' database interface each give, so that a row becomes a record
/// in one place (each record's `from_row`).
pub trait Columns {
    type Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A pet's tags, stored as a JSON array in the client's order.
    fn tags(&self, i: usize) -> Result<Vec<String>, Self::Error>;
}

/// A statement's parameters, bound in order: what the host's storage and
/// the handlers' database interface each take, so that a record becomes
/// parameters in one place (each record's `bind`).
pub trait Params {
    type Error;
    fn int(&mut self, value: i64);
    fn opt_int(&mut self, value: Option<i64>);
    fn text(&mut self, value: String);
    /// A pet's tags, stored as a JSON array in the client's order.
    fn tags(&mut self, value: Vec<String>) -> Result<(), Self::Error>;
}

/// Declares `$name`, a record's parameters gathered in a `Vec<$value>`, for
/// a value type with `Integer`, `Text` and `Null` variants (the host's
/// storage and the handlers' database interface each have one), so that
/// both bind alike. Tags are encoded with the caller's `serde_json`, whose
/// error `$to_error` turns into `$error`.
#[macro_export]
macro_rules! params {
    ($(#[$doc:meta])* $vis:vis $name:ident($value:ident), $error:ty = $to_error:expr) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        $vis struct $name(pub Vec<$value>);

        impl $crate::Params for $name {
            type Error = $error;

            fn int(&mut self, value: i64) {
                self.0.push($value::Integer(value));
            }

            fn opt_int(&mut self, value: Option<i64>) {
                self.0.push(value.map_or($value::Null, $value::Integer));
            }

            fn text(&mut self, value: String) {
                self.0.push($value::Text(value));
            }

            fn tags(&mut self, value: Vec<String>) -> Result<(), $error> {
                let json = serde_json::to_string(&value).map_err($to_error)?;
                self.0.push($value::Text(json));
                Ok(())
            }
        }
    };
}

/// A stored record, declared once: its struct, its columns' names in order
/// (the constant), reading it from a row of those columns and binding it as
/// their parameters. Each field names its column's kind, a method of
/// [`Columns`] and of [`Params`].
macro_rules! record {
    (
        $(#[$doc:meta])* $name:ident, $columns:ident:
        $(#[$first_doc:meta])* $first:ident: $first_ty:ty => $first_kind:ident
        $(, $(#[$field_doc:meta])* $field:ident: $ty:ty => $kind:ident)* $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
        pub struct $name {
            $(#[$first_doc])* pub $first: $first_ty,
            $($(#[$field_doc])* pub $field: $ty,)*
        }

        #[doc = concat!("The columns of [`", stringify!($name), "`], in the order `from_row` reads and `bind` binds them.")]
        pub const $columns: &str = concat!(stringify!($first) $(, ", ", stringify!($field))*);

        impl $name {
            #[doc = concat!("A row of [`", stringify!($columns), "`].")]
            pub fn from_row<C: Columns>(row: &C) -> Result<$name, C::Error> {
                let $first = row.$first_kind(0)?;
                let mut column = 0;
                $(let $field = {
                    column += 1;
                    row.$kind(column)?
                };)*
                Ok($name { $first, $($field),* })
            }

            #[doc = concat!("Bind every column of [`", stringify!($columns), "`], in order.")]
            pub fn bind<P: Params>(self, params: &mut P) -> Result<(), P::Error> {
                record!(@bind params, self.$first, $first_kind);
                $(record!(@bind params, self.$field, $kind);)*
                Ok(())
            }
        }
    };
    (@bind $params:ident, $value:expr, tags) => { $params.tags($value)? };
    (@bind $params:ident, $value:expr, $kind:ident) => { $params.$kind($value) };
}

record!(
    /// A pet as stored and answered.
    Pet, PET_COLUMNS:
    id: i64 => int,
    name: String => text,
    species: String => text,
    tags: Vec<String> => tags,
    status: String => text,
    created_at: String => text,
    updated_at: String => text,
);

record!(
    /// What a client writes of a pet (create, replace, patch): the columns
    /// every write sets, besides the time.
    PetFields, PET_FIELD_COLUMNS:
    name: String => text,
    species: String => text,
    tags: Vec<String> => tags,
    status: String => text,
);

record!(
    /// An order as stored and answered.
    Order, ORDER_COLUMNS:
    id: i64 => int,
    /// `None` once a pet whose orders were all delivered has been deleted.
    pet_id: Option<i64> => opt_int,
    quantity: i64 => int,
    status: String => text,
    created_at: String => text,
    updated_at: String => text,
);

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

    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        Integer(i64),
        Text(String),
        Null,
    }

    params!(Bound(Value), String = |e: serde_json::Error| e.to_string());

    /// The bound values read back as a row, as the databases would answer.
    impl Columns for Bound {
        type Error = String;
        fn int(&self, i: usize) -> Result<i64, String> {
            self.opt_int(i)?.ok_or(format!("column {i} is null"))
        }
        fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
            match self.0.get(i) {
                Some(Value::Integer(v)) => Ok(Some(*v)),
                Some(Value::Null) => Ok(None),
                other => Err(format!("column {i} is {other:?}")),
            }
        }
        fn text(&self, i: usize) -> Result<String, String> {
            let Some(Value::Text(text)) = self.0.get(i) else { return Err(format!("column {i} is not text")) };
            Ok(text.clone())
        }
        fn tags(&self, i: usize) -> Result<Vec<String>, String> {
            serde_json::from_str(&self.text(i)?).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn a_record_binds_its_columns_in_order_and_reads_back_from_that_row() {
        let pet = Pet {
            id: 7,
            name: "Rex".into(),
            species: "dog".into(),
            tags: vec!["b".into(), "a \"".into()],
            status: "sold".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-02T00:00:00Z".into(),
        };
        let mut row = Bound::default();
        pet.clone().bind(&mut row).expect("bind");
        let text = |t: &str| Value::Text(t.into());
        assert_eq!(PET_COLUMNS, "id, name, species, tags, status, created_at, updated_at");
        assert_eq!(
            row.0,
            [
                Value::Integer(7),
                text("Rex"),
                text("dog"),
                text(r#"["b","a \""]"#),
                text("sold"),
                text("2026-01-01T00:00:00Z"),
                text("2026-01-02T00:00:00Z")
            ]
        );
        assert_eq!(Pet::from_row(&row), Ok(pet));

        let order = Order {
            id: 3,
            pet_id: None,
            quantity: 2,
            status: "placed".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let mut row = Bound::default();
        order.clone().bind(&mut row).expect("bind");
        assert_eq!(ORDER_COLUMNS, "id, pet_id, quantity, status, created_at, updated_at");
        assert_eq!(row.0[..3], [Value::Integer(3), Value::Null, Value::Integer(2)]);
        assert_eq!(Order::from_row(&row), Ok(order));

        // What every write sets, in its columns' order; too few for a pet.
        let fields = PetFields { name: "a".into(), species: "b".into(), tags: vec![], status: "sold".into() };
        let mut row = Bound::default();
        fields.bind(&mut row).expect("bind");
        assert_eq!(PET_FIELD_COLUMNS, "name, species, tags, status");
        assert_eq!(row.0, [text("a"), text("b"), text("[]"), text("sold")]);
        assert!(Pet::from_row(&row).is_err());
    }

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
