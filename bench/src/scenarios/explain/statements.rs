//! Collecting the statements: every `query-*.json` of the services' `.sqlx` directories,
//! its parameter types as SQL, and the database each statement runs in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The database a statement runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Db {
    Orders,
    Payments,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Db::Orders => "orders",
            Db::Payments => "payments",
        }
    }
}

/// One statement of a service, from its `query-<hash>.json`.
#[derive(Debug, Clone)]
pub struct Statement {
    pub hash: String,
    pub query: String,
    /// PostgreSQL types of $1, $2, …, when sqlx recorded them.
    pub types: Option<Vec<String>>,
    pub params: usize,
    /// The database its directory belongs to (`orders/.sqlx`), when that tells.
    pub db: Option<Db>,
}

impl Statement {
    /// A batch statement, over `unnest(…)` of its array parameters: the services run
    /// those in transactions begun with `service_kit::database::BATCH_BEGIN`, except the
    /// insert of new orders, which reads no table. Payments' outbox page, claim and
    /// attempt count run in such transactions too without naming `unnest`; they are
    /// explained with the default settings, which is the stricter test of their plans.
    pub fn is_batch(&self) -> bool {
        self.query.contains("unnest(")
    }
}

/// The directories to read: those given, or the workspace's that exist.
pub fn sqlx_dirs(given: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if !given.is_empty() {
        if let Some(d) = given.iter().find(|d| !d.is_dir()) {
            bail!("--sqlx-dir {}: not a directory", d.display());
        }
        return Ok(given.to_vec());
    }
    let root = crate::workspace_root();
    let found: Vec<PathBuf> = [".sqlx", "orders/.sqlx", "payments/.sqlx"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    if found.is_empty() {
        bail!(
            "no .sqlx, orders/.sqlx or payments/.sqlx under {}; pass --sqlx-dir",
            root.display()
        );
    }
    Ok(found)
}

/// Every `query-*.json` of `dirs` (one per hash), sorted by hash.
pub fn load_statements(dirs: &[PathBuf]) -> anyhow::Result<Vec<Statement>> {
    let mut by_hash = BTreeMap::new();
    for dir in dirs {
        let db = match dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
        {
            Some("orders") => Some(Db::Orders),
            Some("payments") => Some(Db::Payments),
            _ => None,
        };
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(hash) = name
                .strip_prefix("query-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let json =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let statement =
                parse_statement(hash, &json, db).with_context(|| format!("{}", path.display()))?;
            by_hash.entry(hash.to_owned()).or_insert(statement);
        }
    }
    if by_hash.is_empty() {
        bail!("no query-*.json in {dirs:?}");
    }
    Ok(by_hash.into_values().collect())
}

pub fn parse_statement(hash: &str, json: &[u8], db: Option<Db>) -> anyhow::Result<Statement> {
    let v: Value = serde_json::from_slice(json).context("not JSON")?;
    let query = v["query"]
        .as_str()
        .context("no \"query\" text")?
        .trim()
        .trim_end_matches(';')
        .to_owned();
    let parameters = &v["describe"]["parameters"];
    let (types, params) = if let Some(left) = parameters["Left"].as_array() {
        let types = left
            .iter()
            .map(|t| pg_type(t.as_str().unwrap_or("")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let n = types.len();
        (Some(types), n)
    } else if let Some(n) = parameters["Right"].as_u64() {
        (None, n as usize)
    } else {
        bail!("no describe.parameters");
    };
    Ok(Statement {
        hash: hash.to_owned(),
        query,
        types,
        params,
        db,
    })
}

/// sqlx's name of a PostgreSQL type (`Int8Array`, `Uuid`) as SQL (`int8[]`, `uuid`).
pub fn pg_type(sqlx_name: &str) -> anyhow::Result<String> {
    let (base, array) = match sqlx_name
        .strip_suffix("Array")
        .or_else(|| sqlx_name.strip_suffix("[]"))
    {
        Some(base) => (base, "[]"),
        None => (sqlx_name, ""),
    };
    if base.is_empty() || !base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("unknown parameter type {sqlx_name:?}");
    }
    Ok(format!("{}{array}", base.to_ascii_lowercase()))
}

/// The query on one line, at most `max` characters.
pub fn one_line(sql: &str, max: usize) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut short: String = line.chars().take(max).collect();
    short.push('…');
    short
}

/// The database whose tables the statement names (its directory's, when that tells).
pub fn database_of(statement: &Statement, tables: &HashMap<String, Db>) -> Result<Db, String> {
    if let Some(db) = statement.db {
        return Ok(db);
    }
    let named: BTreeSet<Db> = statement
        .query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|word| tables.get(&word.to_ascii_lowercase()).copied())
        .collect();
    match named.len() {
        1 => Ok(named.into_iter().next().expect("one")),
        0 => Err("names no table of either database".into()),
        _ => Err("names tables of both databases".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::{Db, Statement, database_of, one_line, parse_statement, pg_type, sqlx_dirs};

    #[test]
    fn sqlx_types_become_sql_types() {
        assert_eq!(pg_type("Int8Array").unwrap(), "int8[]");
        assert_eq!(pg_type("Uuid").unwrap(), "uuid");
        assert_eq!(pg_type("TimestamptzArray").unwrap(), "timestamptz[]");
        assert!(pg_type("int8); DROP TABLE orders; --").is_err());
        assert!(pg_type("").is_err());
    }

    #[test]
    fn statements_parse_and_bad_ones_are_errors() {
        let json =
            br#"{"db_name": "PostgreSQL", "query": "SELECT id\n   FROM orders WHERE id = $1;",
            "describe": {"parameters": {"Left": ["Uuid"]}}, "hash": "ab"}"#;
        let s = parse_statement("ab", json, None).unwrap();
        assert_eq!(s.query, "SELECT id\n   FROM orders WHERE id = $1");
        assert_eq!(s.types, Some(vec!["uuid".to_owned()]));
        assert_eq!(s.params, 1);
        assert!(parse_statement("ab", b"{", None).is_err());
        assert!(parse_statement("ab", br#"{"query": "SELECT 1"}"#, None).is_err());
        assert!(sqlx_dirs(&[PathBuf::from("/nonexistent/.sqlx")]).is_err());
        assert_eq!(one_line("SELECT  a,\n  b", 100), "SELECT a, b");
        assert_eq!(one_line("SELECT a, b", 6), "SELECT…");
    }

    #[test]
    fn the_database_is_the_one_whose_tables_are_named() {
        let tables: HashMap<String, Db> = [
            ("orders".to_owned(), Db::Orders),
            ("payment_events".to_owned(), Db::Payments),
        ]
        .into();
        let s = |q: &str| Statement {
            hash: "h".into(),
            query: q.into(),
            types: None,
            params: 0,
            db: None,
        };
        assert_eq!(
            database_of(&s("UPDATE orders o SET x = 1"), &tables),
            Ok(Db::Orders)
        );
        // `orders_cancelled` is not `orders`.
        assert_eq!(
            database_of(
                &s("SELECT 1 FROM payment_events WHERE reason = 'orders_cancelled'"),
                &tables
            ),
            Ok(Db::Payments)
        );
        assert!(database_of(&s("SELECT 1"), &tables).is_err());
    }
}
