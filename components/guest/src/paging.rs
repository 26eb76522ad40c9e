//! Listings: `limit`, `offset` and the cursor `after` from the query,
//! equality filters, the page body `{"items","total","limit","offset"}` and
//! the `Link: rel="next"` header, for any record.
//!
//! Two ways to page, one order (by id). `offset` skips that many matching
//! rows: the database still walks them, so a deep page costs in proportion
//! to its depth. `after` (the `next` link carries it) starts after an id: an
//! index seek, so any page costs what the first does. The link carries both,
//! and `after` wins when both are given: `offset` then only numbers the page.

use serde::Serialize;

use crate::bindings::petstore::api::config;
use crate::db::{self, Db, FromRow, Row, Sql, SqlDialect, Value};
use crate::error::ApiError;
use crate::http::{Request, Response};

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    /// The cursor: only rows with a greater id.
    pub after: Option<i64>,
}

impl Page {
    /// `limit` defaults to `PAGINATION_LIMIT` and must be 1..=`PAGINATION_MAX`;
    /// `offset` defaults to 0 and must be ≥ 0.
    pub fn from_request(req: &Request) -> Result<Page, ApiError> {
        let settings = config::get();
        let max = i64::from(settings.pagination_max);
        let limit = match req.query("limit")? {
            None => i64::from(settings.pagination_limit),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(ApiError::invalid_parameter("limit", format!("must be an integer from 1 to {max}"))),
            },
        };
        let offset = match req.query("offset")? {
            None => 0,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => return Err(ApiError::invalid_parameter("offset", "must be an integer of 0 or more")),
            },
        };
        let after = match req.query("after")? {
            None => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n),
                _ => return Err(ApiError::invalid_parameter("after", "must be an id: an integer of 0 or more")),
            },
        };
        Ok(Page { limit, offset, after })
    }

    /// The `Link` header value for the page after one that ended at id
    /// `last` with `returned` items; it keeps every other query parameter.
    pub fn next_link(&self, req: &Request, returned: usize, last: i64) -> String {
        let next = self.offset.saturating_add(returned as i64);
        let mut query: Vec<String> =
            req.raw_query_without(&["limit", "offset", "after"]).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        query.push(format!("limit={}", self.limit));
        query.push(format!("offset={next}"));
        query.push(format!("after={last}"));
        format!("<{}?{}>; rel=\"next\"", req.path, query.join("&"))
    }
}

/// The conditions of a listing's `WHERE`, each with its one parameter.
#[derive(Default, Clone)]
pub struct Filters {
    conditions: Vec<String>,
    params: Vec<Value>,
    /// The last equality given: on PostgreSQL, the `(column, id)` index a
    /// page is read through (see [`list`]).
    seek: Option<Seek>,
}

#[derive(Clone)]
struct Seek {
    column: String,
    /// Its condition's place in `conditions`, and its parameter's number.
    condition: usize,
    param: usize,
}

impl Filters {
    pub fn new() -> Filters {
        Filters::default()
    }

    /// `column = value`, when a value is given. The column needs an index
    /// on `(column, id)`.
    pub fn equal(mut self, column: &str, value: Option<&str>) -> Filters {
        self = self.condition(|n| format!("{column} = ${n}"), value);
        if value.is_some() {
            let (condition, param) = (self.conditions.len() - 1, self.params.len());
            self.seek = Some(Seek { column: column.to_string(), condition, param });
        }
        self
    }

    /// A condition on `$n`, the placeholder it is given, when a value is given.
    /// Where it reads another table by id, it can say `COLUMN {after}`:
    /// with a cursor that becomes `COLUMN > <the cursor>`, so the other
    /// table's index seeks to the page too (a database does not carry
    /// `id > …` across `id = COLUMN` by itself).
    pub fn condition(mut self, sql: impl FnOnce(usize) -> String, value: Option<&str>) -> Filters {
        if let Some(value) = value {
            self.params.push(Value::Text(value.to_string()));
            self.conditions.push(sql(self.params.len()));
        }
        self
    }

    fn sql(&self) -> String {
        Filters::clause(&self.conditions, "IS NOT NULL")
    }

    /// `WHERE` and the conditions, with `{after}` made `after`.
    fn clause(conditions: &[String], after: &str) -> String {
        if conditions.is_empty() {
            return String::new();
        }
        format!(" WHERE {}", conditions.join(" AND ").replace("{after}", after))
    }
}

/// The body of a page: `{"items":[…],"total":N,"limit":L,"offset":O}`.
#[derive(Serialize)]
struct PageBody<T: Serialize> {
    items: Vec<T>,
    total: i64,
    limit: i64,
    offset: i64,
}

/// `200` with one page of `columns` from `table` (ordered by id) under
/// `filters`, and `Link` to the next page when more rows follow it. The
/// total comes with the page, in one statement (only a page past the end
/// asks again), and one row more than the page tells whether more follow.
///
/// `counts`: a table of counts kept by the database's triggers (columns `n`
/// and each filtered column) that holds this total: a sum of a few rows
/// instead of a count of every matching one.
///
/// On PostgreSQL a page filtered on a column (`c = v`) is read in `(c, id)`
/// order, with `c` written as a range (`c >= v AND c <= v`: the same rows)
/// and the cursor as `(c, id) > (v, after)`: then only the `(c, id)` index
/// gives that order and seeks straight to the cursor, and the planner
/// cannot walk the primary key instead. It did with `c = v AND id > after
/// ORDER BY id`, reckoning the matching rows spread evenly over the ids: a
/// page of the last cats, with 30,000 newer dogs after it, read all 30,000
/// (20 times the first page's cost, `bench/scale`). SQLite seeks
/// `(c = v AND id > after)` itself, and reads a range on `c` from its start.
pub fn list<T: FromRow + Serialize + Keyed>(
    req: &Request,
    table: &str,
    columns: &str,
    filters: Filters,
    counts: Option<&str>,
) -> Result<Response, ApiError> {
    let page = Page::from_request(req)?;
    let count = match counts {
        // SUM of a BIGINT is a NUMERIC on PostgreSQL: cast back.
        Some(counts) => format!("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM {counts}{}", filters.sql()),
        None => format!("SELECT COUNT(*) FROM {table}{}", filters.sql()),
    };
    let mut params = filters.params.clone();
    let mut conditions = filters.conditions.clone();
    let seek = filters.seek.as_ref().filter(|_| matches!(db::dialect(), SqlDialect::Postgresql));
    let order = match seek {
        Some(Seek { column, condition, param }) => {
            conditions[*condition] = format!("{column} >= ${param} AND {column} <= ${param}");
            format!("{column}, id")
        }
        None => "id".to_string(),
    };
    let (skip, after) = match page.after {
        Some(after) => {
            params.push(Value::Integer(after));
            conditions.push(match seek {
                Some(Seek { column, param, .. }) => format!("({column}, id) > (${param}, ${})", params.len()),
                None => format!("id > ${}", params.len()),
            });
            (String::new(), format!("> ${}", params.len()))
        }
        None => {
            params.push(Value::Integer(page.offset));
            (format!(" OFFSET ${}", params.len()), "IS NOT NULL".to_string())
        }
    };
    params.push(Value::Integer(page.limit + 1));
    let sql = format!(
        "SELECT {columns}, ({count}) FROM {table}{} ORDER BY {order} LIMIT ${}{skip}",
        Filters::clause(&conditions, &after),
        params.len()
    );
    let mut rows: Vec<Counted<T>> = Db.all(&sql, &params)?;
    let total = match rows.first() {
        Some(first) => first.total,
        None if page.offset == 0 && page.after.is_none() => 0,
        None => Db.one(&count, &filters.params)?,
    };
    let more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let items: Vec<T> = rows.into_iter().map(|row| row.item).collect();
    let link = match items.last() {
        Some(last) if more => Some(page.next_link(req, items.len(), last.id())),
        _ => None,
    };
    let resp = Response::json(200, &PageBody { items, total, limit: page.limit, offset: page.offset });
    Ok(match link {
        Some(link) => resp.header("link", link),
        None => resp,
    })
}

/// A listed record's id: where the next page starts.
pub trait Keyed {
    fn id(&self) -> i64;
}

/// A record, and the total its query counted in its last column.
struct Counted<T> {
    item: T,
    total: i64,
}

impl<T: FromRow> FromRow for Counted<T> {
    fn from_row(row: Row<'_>) -> Result<Self, ApiError> {
        let Some((last, record)) = row.0.split_last() else { return Err(ApiError::Internal) };
        Ok(Counted { item: T::from_row(Row(record))?, total: Row(std::slice::from_ref(last)).int(0)? })
    }
}
