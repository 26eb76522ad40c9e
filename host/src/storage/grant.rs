//! What one component may touch in the database: the tables its entry in
//! `routes.toml`'s `[tables]` lists, and nothing else. Every statement a
//! component runs carries its grant and its request's deadline ([`Caller`]);
//! the backends enforce both (SQLite's authorizer and progress handler,
//! PostgreSQL's component role and screen). The host's own statements
//! (migrations, the registry, backups) run as [`Caller::Host`].

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;

/// How long after its request's deadline a statement is stopped.
const STOP_AFTER_DEADLINE: std::time::Duration = std::time::Duration::from_millis(25);

/// The tables one component may read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    component: Arc<str>,
    /// Lower-case table names.
    tables: BTreeSet<String>,
}

impl Grant {
    pub fn new<T: AsRef<str>>(component: &str, tables: impl IntoIterator<Item = T>) -> Grant {
        Grant {
            component: Arc::from(component),
            tables: tables.into_iter().map(|t| t.as_ref().to_ascii_lowercase()).collect(),
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// The component's name, shared.
    pub fn component_name(&self) -> Arc<str> {
        self.component.clone()
    }

    /// Whether `table` is one of the component's (table names are compared
    /// as SQL compares unquoted names: without case).
    pub fn allows(&self, table: &str) -> bool {
        self.tables.contains(&table.to_ascii_lowercase())
    }

    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(String::as_str)
    }
}

/// Who runs a statement.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The host itself, with every right its database role has.
    Host,
    /// A component's request: only what `grant` lists, and only until
    /// `deadline`, when the statement is stopped.
    Component { grant: Arc<Grant>, deadline: Instant },
}

impl Caller {
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Caller::Host => None,
            Caller::Component { grant, .. } => Some(grant),
        }
    }

    /// When the storage layer stops the caller's work: just after its
    /// request's deadline, so that the request is answered `504` (the
    /// runtime's answer at the deadline, which also drops the statement)
    /// rather than with the statement's own error, and a statement that
    /// outlived its request is stopped all the same.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Caller::Host => None,
            Caller::Component { deadline, .. } => Some(*deadline + STOP_AFTER_DEADLINE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_granted_by_name_without_case() {
        let grant = Grant::new("pets", ["pets", "Pet_Tags"]);
        assert!(grant.allows("PETS") && grant.allows("pet_tags"));
        assert!(!grant.allows("orders") && !grant.allows("pets2"));
        assert_eq!(grant.tables().collect::<Vec<_>>(), ["pet_tags", "pets"]);
    }
}
