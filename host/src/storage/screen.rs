//! A component's SQL read as its database will read it, and screened before
//! it is sent. What the database itself enforces is the boundary (on
//! PostgreSQL the component role's privileges: DML on the components' tables
//! and nothing else, no DDL, no temporary tables, no registry; on SQLite the
//! authorizer). One PostgreSQL role cannot tell one component from another,
//! nor stop a statement from changing its own session, and SQLite's
//! authorizer never sees VACUUM; so the screen adds, on both:
//!
//! - one statement, and a query or DML: SELECT, INSERT, UPDATE, DELETE,
//!   WITH, VALUES or TABLE (so no SET, RESET, DISCARD, LISTEN, NOTIFY,
//!   COPY, PREPARE, DECLARE, DO, LOCK, …);
//! - no function that changes the session or other sessions, or runs SQL
//!   given as a string (`set_config`, advisory locks, `pg_notify`,
//!   `pg_terminate_backend`, large objects, `query_to_xml`, `ts_stat`, …),
//!   and no catalog (`pg_…`, `information_schema`, `sqlite_…`);
//! - no table of another component's, nor of the host's;
//!
//! each refused with a message that says which rule. The statement is read
//! as its database's lexer reads it (`statement.rs`; on PostgreSQL with
//! `standard_conforming_strings` on, which the component role's connections
//! set and cannot change).
//!
//! A statement that passes also gets a [`Session`] verdict: whether it
//! surely leaves its session as it found it (it calls no function but a
//! few known ones), or may not (any other function: one the list above
//! missed could change a setting). PostgreSQL's connections are reset
//! after a statement of the second kind (`postgres/pool.rs`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use super::statement::{self, Syntax, Token};
use super::{DbError, Grant};

/// Functions no component may call, by exact name.
const REFUSED: &[&str] = &[
    "set_config",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_notify",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_promote",
    "pg_log_backend_memory_contexts",
    "pg_export_snapshot",
    "pg_stat_file",
    "ts_stat",
    "ts_rewrite",
];

/// … and by the start of their names: families of functions, and the
/// catalogs (`pg_roles`, `pg_stat_activity`, `sqlite_master`, …).
const REFUSED_PREFIXES: &[&str] = &["pg_", "lo_", "dblink", "information_schema", "sqlite_"];

/// Names under a refused prefix that a component may use.
const ALLOWED: &[&str] = &["pg_sleep"];

/// Functions that read their arguments and nothing of the session: a
/// statement calling only these (the components' own SQL) leaves its
/// session as it found it.
const KEEPS_SESSION: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "coalesce",
    "nullif",
    "cast",
    "lower",
    "upper",
    "length",
    "json_array_elements_text",
    "json_array_length",
];

/// Words that open a parenthesis without calling anything: subqueries,
/// lists, column lists and conditions.
const NOT_CALLS: &[&str] = &[
    "select",
    "from",
    "join",
    "where",
    "and",
    "or",
    "not",
    "in",
    "exists",
    "values",
    "into",
    "on",
    "using",
    "as",
    "any",
    "all",
    "some",
    "array",
    "row",
    "set",
    "conflict",
    "over",
    "filter",
    "then",
    "else",
    "when",
    "lateral",
    "union",
    "except",
    "intersect",
];

/// The host's own tables, which no grant may name.
const HOST_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "component_versions",
    "component_active",
    "replica_components",
    "component_canary",
    "canary_counts",
];

/// Screens components' statements against their grants.
pub struct Screen {
    /// Every table some grant names, and the host's own: a statement that
    /// names one of these outside its own grant is refused.
    known: BTreeSet<String>,
    /// Verdicts already reached, by component and statement text:
    /// components send the same few statements over and over, and reading
    /// one costs more than looking it up.
    verdicts: Mutex<HashMap<Statement, Verdict>>,
}

/// A component's name and a statement it sent.
type Statement = (Arc<str>, Box<str>);
/// `Err` says why the statement is refused.
type Verdict = Result<Session, String>;

/// What a statement that passes may do to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// It calls no function but those of [`KEEPS_SESSION`]: its session
    /// is left as it was.
    Kept,
    /// It calls another function (or something the screen cannot tell
    /// from one), which might change a setting: reset the session after.
    MayChange,
}

/// Verdicts kept at most; the cache starts over when full.
const MAX_VERDICTS: usize = 4096;

impl Screen {
    pub fn new(grants: &[Grant]) -> Screen {
        let mut known: BTreeSet<String> = HOST_TABLES.iter().map(|t| t.to_string()).collect();
        known.extend(grants.iter().flat_map(|g| g.tables().map(str::to_string)));
        Screen { known, verdicts: Mutex::default() }
    }

    /// `Ok` if `sql` may be sent to a `dialect` database for `grant`'s
    /// component, with what it may do to its session.
    pub fn check(&self, grant: &Grant, sql: &str, dialect: Syntax) -> Result<Session, DbError> {
        let key = (grant.component_name(), Box::<str>::from(sql));
        let cached = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let verdict = self.verdict(grant, sql, dialect);
                let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
                if verdicts.len() >= MAX_VERDICTS {
                    verdicts.clear();
                }
                verdicts.insert(key, verdict.clone());
                verdict
            }
        };
        verdict.map_err(|why| DbError::Forbidden(format!("{} may not {why}", grant.component())))
    }

    fn verdict(&self, grant: &Grant, sql: &str, dialect: Syntax) -> Verdict {
        let tokens = statement::one_query_or_dml(sql, dialect)?;
        for token in &tokens {
            let Token::Name(name, _) = token else { continue };
            let refused = REFUSED.contains(&name.as_str())
                || REFUSED_PREFIXES.iter().any(|p| name.starts_with(p))
                || name.contains("_to_xml");
            if refused && !ALLOWED.contains(&name.as_str()) {
                return Err(format!("use {name} (it reaches beyond its tables)"));
            }
            if self.known.contains(name) && !grant.allows(name) {
                return Err(format!("use table {name}: not among its tables in routes.toml"));
            }
        }
        Ok(self.session(&tokens))
    }

    /// Every `(` opens a subquery, a list or a column list (after a word of
    /// [`NOT_CALLS`], a table's name, an alias after `AS`, or no name), or
    /// calls a function of [`KEEPS_SESSION`]; and every `.name` qualifies a
    /// name by a table's or an alias's (`t.id`). Anything else may change
    /// the session: an unknown or quoted name before `(`, or `.name` after
    /// a value, which PostgreSQL reads as a call of any one-argument
    /// function (`(0.5).setseed`, `$1.setseed`).
    fn session(&self, tokens: &[Token]) -> Session {
        fn plain(token: Option<&Token>) -> Option<&str> {
            match token {
                Some(Token::Name(name, false)) => Some(name.as_str()),
                _ => None,
            }
        }
        for (at, token) in tokens.iter().enumerate().skip(1) {
            let after_value = !matches!(tokens[at - 1], Token::Name(..));
            if *token == Token::Dot && after_value && matches!(tokens.get(at + 1), Some(Token::Name(..))) {
                return Session::MayChange;
            }
            if *token != Token::Open || after_value {
                continue;
            }
            let Some(name) = plain(tokens.get(at - 1)) else { return Session::MayChange };
            let known = KEEPS_SESSION.contains(&name) || NOT_CALLS.contains(&name) || self.known.contains(name);
            let alias = at >= 2 && plain(tokens.get(at - 2)) == Some("as");
            if !known && !alias {
                return Session::MayChange;
            }
        }
        Session::Kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> Screen {
        Screen::new(&[Grant::new("pets", ["pets", "pet_tags"]), Grant::new("orders", ["orders", "pets"])])
    }

    fn refused(sql: &str) -> String {
        match screen().check(&Grant::new("pets", ["pets", "pet_tags"]), sql, Syntax::Postgres) {
            Err(DbError::Forbidden(why)) => why,
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }

    /// Each statement is refused, and why says `because`.
    fn all_refused(because: &str, statements: &[&str]) {
        for sql in statements {
            assert!(refused(sql).contains(because), "{sql}: {}", refused(sql));
        }
    }

    fn passes(sql: &str) {
        let verdict = screen().check(&Grant::new("pets", ["pets", "pet_tags"]), sql, Syntax::Postgres);
        assert!(verdict.is_ok(), "{sql:?}: {verdict:?}");
    }

    #[test]
    fn queries_and_dml_on_the_components_own_tables_pass() {
        passes("SELECT id, name FROM pets WHERE id = $1");
        passes("  (SELECT 1)");
        passes("INSERT INTO pets (name) VALUES ($1) RETURNING id");
        passes("WITH x AS (DELETE FROM pet_tags WHERE pet_id = $1 RETURNING 1) SELECT count(*) FROM x");
        passes("SELECT 'orders; set_config(''a'', ''b'', false)' AS text, $$ DROP TABLE pets $$");
        passes("SELECT E'it\\'s orders' -- orders in a comment\n FROM pets /* nested /* orders */ */");
        passes("SELECT pg_sleep($1)");
        passes("SELECT 1;");
    }

    fn session(sql: &str) -> Session {
        screen().check(&Grant::new("pets", ["pets", "pet_tags"]), sql, Syntax::Postgres).expect("passes")
    }

    #[test]
    fn a_statement_keeps_its_session_only_when_it_calls_known_functions() {
        let kept = [
            "SELECT id, name FROM pets WHERE id = $1",
            "INSERT INTO pets (name, tags) VALUES ($1, $2) RETURNING id",
            "SELECT id, (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM pets WHERE status = $1) FROM pets \
             WHERE EXISTS (SELECT 1 FROM pet_tags t WHERE t.pet_id = pets.id AND t.tag IN ($2, $3)) ORDER BY id",
            "SELECT count(*) FROM json_array_elements_text($1) AS t(value)",
            "UPDATE pets SET (name, species) = ($1, $2) WHERE id = $3",
            "INSERT INTO pets (name) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            "WITH x AS (DELETE FROM pet_tags WHERE pet_id = $1 RETURNING 1) SELECT count(*) FROM x",
            "SELECT 'set_config(1)', \"name\", public.pets.id, 0.5 FROM pets",
        ];
        // Calls of other functions, however written (the review's attribute
        // notation: `(x).f` and `$1.f` call f(x)).
        let may_change = [
            "SELECT setseed(0.5)",
            "SELECT pg_sleep($1)",
            "SELECT \"count\"(*) FROM pets",
            "SELECT now()",
            "SELECT x FROM pets, generate_series(1, 2) t(x)",
            "WITH c (n) AS (SELECT 1) SELECT n FROM c",
            "SELECT count(*) FROM pets WHERE name = nextval($1)",
            "SELECT (0.5).setseed",
            "SELECT $1.setseed",
            "SELECT (SELECT 0.5).\"setseed\"",
        ];
        for (statements, expected) in [(&kept[..], Session::Kept), (&may_change[..], Session::MayChange)] {
            for sql in statements {
                assert_eq!(session(sql), expected, "{sql}");
            }
        }
    }

    #[test]
    fn session_and_schema_statements_are_refused() {
        all_refused(
            "run",
            &[
                "SET statement_timeout = 0",
                "set local statement_timeout = 0",
                "RESET ALL",
                "DISCARD ALL",
                "LISTEN x",
                "NOTIFY x",
                "COPY pets TO STDOUT",
                "CREATE TRIGGER t AFTER INSERT ON pets EXECUTE FUNCTION f()",
                "DO $$ BEGIN PERFORM 1; END $$",
                "PREPARE p AS SELECT 1",
                "ALTER ROLE current_user SET default_transaction_read_only = on",
                "/* SELECT */ SET x = 1",
            ],
        );
    }

    #[test]
    fn functions_that_reach_beyond_the_statement_are_refused_however_written() {
        all_refused(
            "beyond its tables",
            &[
                "SELECT set_config('statement_timeout', '0', false)",
                "SELECT pg_catalog.SET_CONFIG('x', 'y', false)",
                "SELECT \"set_config\"('x', 'y', false)",
                "SELECT pg_advisory_lock(1)",
                "SELECT pg_try_advisory_lock_shared(1)",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
                "SELECT pg_notify('petstore_components', '')",
                "SELECT query_to_xml('select * from orders', true, false, '')",
                "SELECT lo_import('/etc/passwd')",
            ],
        );
    }

    #[test]
    fn catalogs_are_refused_on_both_databases() {
        all_refused(
            "beyond its tables",
            &[
                "SELECT rolname FROM pg_roles",
                "SELECT * FROM pg_catalog.pg_stat_activity",
                "SELECT * FROM information_schema.tables",
            ],
        );
        let grant = Grant::new("pets", ["pets"]);
        let sqlite = screen().check(&grant, "INSERT INTO pets (name) SELECT sql FROM sqlite_master", Syntax::Sqlite);
        assert!(matches!(sqlite, Err(DbError::Forbidden(why)) if why.contains("sqlite_master")));
    }

    #[test]
    fn other_components_and_the_hosts_tables_are_refused() {
        assert!(refused("SELECT * FROM orders").contains("orders"));
        assert!(refused("SELECT * FROM public.\"orders\"").contains("orders"));
        assert!(
            refused("UPDATE pets SET name = (SELECT digest FROM component_active LIMIT 1)")
                .contains("component_active")
        );
        assert!(refused("SELECT * FROM petstore_registry.component_versions").contains("component_versions"));
        assert!(refused("SELECT * FROM _sqlx_migrations").contains("_sqlx_migrations"));
    }

    #[test]
    fn what_cannot_be_read_with_certainty_is_refused() {
        for sql in [
            "SELECT U&\"\\0073et_config\"('a', 'b', false)",
            "SELECT u&'x'",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "SELECT $tag$ unterminated",
            "SELECT \"unterminated",
            "SELECT 1; SELECT 2",
            "SELECT 1; SET x = 1",
        ] {
            refused(sql);
        }
    }
}
