//! The route table: which component answers which path prefix, and which
//! database tables each component may use, read from `routes.toml` in the
//! components folder. Pure, and tested alone.
//!
//! ```toml
//! [routes]
//! "/api/v1/pets" = "pets.wasm"
//!
//! [tables]
//! pets = ["pets", "pet_tags", "orders"]
//! ```
//!
//! The tables are the deployment's word, not the component's: an upload of
//! a new version keeps its name's tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Paths the host answers itself; no component may claim them.
const RESERVED: &[&str] = &["/api/v1/health", "/api/v1/openapi.json"];
const API_ROOT: &str = "/api/v1";
const ROUTES_FILE: &str = "routes.toml";

#[derive(Debug, Error)]
pub enum RouteError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid route table: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("route {prefix:?}: {reason}")]
    Invalid { prefix: String, reason: String },
}

/// One prefix and the component that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub prefix: String,
    /// The component's name: its file name without extension.
    pub component: String,
    pub file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Longest prefix first, so the first match is the most specific.
    routes: Vec<Route>,
    /// The tables each component may use; a component without an entry may
    /// use none.
    tables: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: BTreeMap<String, String>,
    #[serde(default)]
    tables: BTreeMap<String, Vec<String>>,
}

impl RouteTable {
    /// Read `routes.toml` from `dir`; component files are relative to `dir`.
    pub fn load(dir: &Path) -> Result<RouteTable, RouteError> {
        let path = dir.join(ROUTES_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| RouteError::Read { path: path.display().to_string(), source })?;
        RouteTable::parse(&text, dir)
    }

    /// The table `dir`'s `routes.toml` holds, given its text.
    pub fn parse(text: &str, dir: &Path) -> Result<RouteTable, RouteError> {
        let file: RoutesFile = toml::from_str(text)
            .map_err(|source| RouteError::Parse { path: dir.join(ROUTES_FILE).display().to_string(), source })?;
        let mut routes = Vec::new();
        for (prefix, file) in file.routes {
            let invalid = |reason: &str| RouteError::Invalid { prefix: prefix.clone(), reason: reason.to_string() };
            if !prefix.starts_with(&format!("{API_ROOT}/")) || prefix.ends_with('/') {
                return Err(invalid("must start with /api/v1/ and not end with /"));
            }
            if RESERVED.iter().any(|r| matches_prefix(r, &prefix) || matches_prefix(&prefix, r)) {
                return Err(invalid("overlaps a path the host answers itself"));
            }
            let component = Path::new(&file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| is_name(s, b"-_") && file.ends_with(".wasm") && !file.contains('/'))
                .ok_or_else(|| {
                    invalid("the component must be a file name ending in .wasm, its name of letters, digits, - and _")
                })?;
            routes.push(Route { prefix, component, file: dir.join(&file) });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        for (component, tables) in &file.tables {
            let invalid = |reason: String| RouteError::Invalid { prefix: format!("[tables] {component}"), reason };
            if !routes.iter().any(|r| r.component == *component) {
                return Err(invalid("no route serves this component".into()));
            }
            if let Some(bad) = tables.iter().find(|t| !is_name(t, b"_") || t.starts_with(|c: char| c.is_ascii_digit()))
            {
                return Err(invalid(format!("{bad:?} is not a table name (lower-case letters, digits and _)")));
            }
        }
        Ok(RouteTable { routes, tables: file.tables })
    }

    /// The tables `component` may use.
    pub fn tables_of(&self, component: &str) -> &[String] {
        self.tables.get(component).map_or(&[], Vec::as_slice)
    }

    /// The route with the longest prefix that `path` falls under, on a segment boundary.
    pub fn resolve(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| matches_prefix(path, &r.prefix))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Each component once, with its file.
    pub fn components(&self) -> Vec<(String, PathBuf)> {
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for r in &self.routes {
            seen.entry(r.component.clone()).or_insert_with(|| r.file.clone());
        }
        seen.into_iter().collect()
    }
}

/// Lower-case ASCII letters, digits and `extra`, at least one character.
fn is_name(name: &str, extra: &[u8]) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// `/a/b` is under `/a` but `/ab` is not.
fn matches_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<RouteTable, RouteError> {
        RouteTable::parse(text, Path::new("/c"))
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table("[routes]\n\"/api/v1/store\" = \"orders.wasm\"\n\"/api/v1/store/special\" = \"special.wasm\"\n\"/api/v1/pets\" = \"pets.wasm\"\n").unwrap();
        assert_eq!(t.resolve("/api/v1/pets").unwrap().component, "pets");
        assert_eq!(t.resolve("/api/v1/pets/3").unwrap().component, "pets");
        assert_eq!(t.resolve("/api/v1/store/special/x").unwrap().component, "special");
        assert_eq!(t.resolve("/api/v1/store/inventory").unwrap().component, "orders");
        assert!(t.resolve("/api/v1/petsx").is_none());
        assert!(t.resolve("/api/v1").is_none());
        assert_eq!(t.resolve("/api/v1/pets").unwrap().file, Path::new("/c/pets.wasm"));
    }

    #[test]
    fn bad_tables_are_refused_when_loaded() {
        assert!(matches!(table("[routes]\n\"/pets\" = \"pets.wasm\""), Err(RouteError::Invalid { .. })));
        assert!(matches!(table("[routes]\n\"/api/v1/pets/\" = \"pets.wasm\""), Err(RouteError::Invalid { .. })));
        assert!(matches!(table("[routes]\n\"/api/v1/health\" = \"h.wasm\""), Err(RouteError::Invalid { .. })));
        assert!(matches!(table("[routes]\n\"/api/v1/x\" = \"../x.wasm\""), Err(RouteError::Invalid { .. })));
        assert!(matches!(table("[routes]\n\"/api/v1/x\" = \"x.so\""), Err(RouteError::Invalid { .. })));
        assert!(matches!(
            table("[routes]\n\"/api/v1/x\" = \"x.wasm\"\n\"/api/v1/x\" = \"y.wasm\""),
            Err(RouteError::Parse { .. })
        ));
        assert!(matches!(table("routes = 3"), Err(RouteError::Parse { .. })));
    }

    #[test]
    fn each_component_has_the_tables_its_entry_lists_and_no_others() {
        let t = table("[routes]\n\"/api/v1/pets\" = \"pets.wasm\"\n\"/api/v1/x\" = \"x.wasm\"\n[tables]\npets = [\"pets\", \"pet_tags\"]\n").unwrap();
        assert_eq!(t.tables_of("pets"), ["pets", "pet_tags"]);
        assert!(t.tables_of("x").is_empty(), "no entry: no tables");
        let unrouted = table("[routes]\n\"/api/v1/pets\" = \"pets.wasm\"\n[tables]\nother = [\"pets\"]\n");
        assert!(matches!(unrouted, Err(RouteError::Invalid { .. })));
        for bad in ["\"pets; DROP\"", "\"Pets\"", "\"\"", "\"1pets\""] {
            let text = format!("[routes]\n\"/api/v1/pets\" = \"pets.wasm\"\n[tables]\npets = [{bad}]\n");
            assert!(matches!(table(&text), Err(RouteError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(table("[routes]\n\"/api/v1/x\" = \"a*b.wasm\"\n"), Err(RouteError::Invalid { .. })));
    }

    #[test]
    fn a_component_serving_two_prefixes_is_listed_once() {
        let t = table("[routes]\n\"/api/v1/orders\" = \"orders.wasm\"\n\"/api/v1/store\" = \"orders.wasm\"\n").unwrap();
        assert_eq!(t.components().len(), 1);
    }
}
