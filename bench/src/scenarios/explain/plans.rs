//! Classifying plans: the catalog of a database (rows per table, which indexes are on
//! the primary key's columns), and what a plan in JSON does with the tables: how it
//! reads each, how each UPDATE or DELETE finds its rows, whether it has a LIMIT; then
//! the findings, a Seq Scan on a big table or a write off the primary key.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;

/// Tables and indexes of one database.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Table → rows (`pg_class.reltuples` after ANALYZE).
    pub tables: HashMap<String, f64>,
    pub indexes: HashMap<String, Index>,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub table: String,
    /// The primary key, or an index on the same columns (a partial one, say).
    pub primary_columns: bool,
    pub unique: bool,
}

impl Catalog {
    pub(super) async fn read(conn: &mut PgConnection) -> sqlx::Result<Catalog> {
        let tables: Vec<(String, f64)> = sqlx::query_as(
            "SELECT c.relname::text, c.reltuples::float8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let indexes: Vec<(String, String, bool, bool)> = sqlx::query_as(
            "SELECT i.relname::text, c.relname::text, coalesce(x.indkey::text = (SELECT \
             p.indkey::text FROM pg_index p WHERE p.indrelid = x.indrelid AND p.indisprimary), \
             false), x.indisunique FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class c ON c.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Catalog {
            tables: tables.into_iter().collect(),
            indexes: indexes
                .into_iter()
                .map(|(name, table, primary_columns, unique)| {
                    (
                        name,
                        Index {
                            table,
                            primary_columns,
                            unique,
                        },
                    )
                })
                .collect(),
        })
    }

    pub(super) fn rows(&self, table: &str) -> f64 {
        self.tables.get(table).copied().unwrap_or(0.0)
    }
}

/// How a plan reaches one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub table: String,
    pub alias: String,
    pub node: String,
    pub index: Option<String>,
}

impl Access {
    pub(super) fn describe(&self) -> String {
        match &self.index {
            Some(index) => format!("{index} ({})", self.node),
            None => format!("{} on {}", self.node, self.table),
        }
    }
}

/// An UPDATE or DELETE in a plan and how it finds its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub op: String,
    pub table: String,
    pub by: Vec<Access>,
}

/// What one plan does with the tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub accesses: Vec<Access>,
    pub writes: Vec<Write>,
    pub limit: bool,
}

fn is_subplan(node: &Value) -> bool {
    matches!(
        node["Parent Relationship"].as_str(),
        Some("InitPlan" | "SubPlan")
    )
}

/// Every table access under `node` (index scans named by their index, bitmap scans by
/// theirs); `with_subplans: false` leaves out InitPlans and SubPlans (CTEs among them).
fn accesses(
    node: &Value,
    parent_alias: Option<&str>,
    catalog: &Catalog,
    with_subplans: bool,
    out: &mut Vec<Access>,
) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    let alias = node["Alias"].as_str().or(parent_alias);
    if kind != "ModifyTable" && kind != "Bitmap Heap Scan" {
        let index = node["Index Name"].as_str();
        let table = node["Relation Name"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                index
                    .and_then(|i| catalog.indexes.get(i))
                    .map(|i| i.table.clone())
            });
        if let Some(table) = table {
            out.push(Access {
                alias: alias.unwrap_or(&table).to_owned(),
                table,
                node: kind.to_owned(),
                index: index.map(str::to_owned),
            });
        }
    }
    // A bitmap heap scan's index scans (under BitmapAnd/Or too) scan its table.
    let child_alias = if kind.starts_with("Bitmap") {
        alias
    } else {
        None
    };
    for child in node["Plans"].as_array().into_iter().flatten() {
        if with_subplans || !is_subplan(child) {
            accesses(child, child_alias, catalog, with_subplans, out);
        }
    }
}

fn writes(node: &Value, catalog: &Catalog, out: &mut Vec<Write>) {
    let op = node["Operation"].as_str().unwrap_or("");
    if node["Node Type"] == "ModifyTable"
        && matches!(op, "Update" | "Delete")
        && let Some(table) = node["Relation Name"].as_str()
    {
        let alias = node["Alias"].as_str().unwrap_or(table);
        let mut found = Vec::new();
        for child in node["Plans"].as_array().into_iter().flatten() {
            if !is_subplan(child) {
                accesses(child, None, catalog, false, &mut found);
            }
        }
        found.retain(|a| a.table == table && a.alias == alias);
        out.push(Write {
            op: op.to_uppercase(),
            table: table.to_owned(),
            by: found,
        });
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        writes(child, catalog, out);
    }
}

fn has_limit(node: &Value) -> bool {
    node["Node Type"] == "Limit"
        || node["Plans"]
            .as_array()
            .into_iter()
            .flatten()
            .any(has_limit)
}

/// Reads the output of `EXPLAIN (FORMAT JSON)`.
pub fn analyze(json: &Value, catalog: &Catalog) -> Analysis {
    let plan = &json[0]["Plan"];
    let mut analysis = Analysis {
        limit: has_limit(plan),
        ..Default::default()
    };
    accesses(plan, None, catalog, true, &mut analysis.accesses);
    writes(plan, catalog, &mut analysis.writes);
    analysis
}

impl Analysis {
    /// Seq Scans on tables of at least `big` rows.
    pub fn big_seq_scans(&self, catalog: &Catalog, big: u64) -> Vec<String> {
        let mut tables: Vec<String> = self
            .accesses
            .iter()
            .filter(|a| a.node == "Seq Scan" && catalog.rows(&a.table) >= big as f64)
            .map(|a| a.table.clone())
            .collect();
        tables.dedup();
        tables
    }

    /// The UPDATEs and DELETEs of tables of at least `big` rows whose rows are not
    /// found through an index on the primary key's columns alone, and why.
    pub fn writes_off_the_key(&self, catalog: &Catalog, big: u64) -> Vec<String> {
        let index = |a: &Access| a.index.as_ref().and_then(|i| catalog.indexes.get(i));
        self.writes
            .iter()
            .filter_map(|w| {
                let keyed =
                    w.by.iter()
                        .all(|a| index(a).is_some_and(|i| i.primary_columns));
                if (!w.by.is_empty() && keyed) || catalog.rows(&w.table) < big as f64 {
                    return None;
                }
                if w.by.is_empty() {
                    return Some(format!(
                        "{} of {}: no scan of it in the plan",
                        w.op, w.table
                    ));
                }
                let by: Vec<String> = w.by.iter().map(Access::describe).collect();
                let unique = w.by.iter().all(|a| index(a).is_some_and(|i| i.unique));
                Some(format!(
                    "{} of {} finds its rows by {}, not by its primary key{}",
                    w.op,
                    w.table,
                    by.join(", "),
                    if unique {
                        " (a unique key: one row)"
                    } else {
                        ""
                    }
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{Catalog, Index, analyze};

    #[test]
    fn writes_are_checked_against_the_primary_key() {
        let catalog = Catalog {
            tables: [("orders".to_owned(), 5000.0), ("ws".to_owned(), 2.0)].into(),
            indexes: [
                (
                    "orders_pkey".to_owned(),
                    Index {
                        table: "orders".into(),
                        primary_columns: true,
                        unique: true,
                    },
                ),
                (
                    "orders_key".to_owned(),
                    Index {
                        table: "orders".into(),
                        primary_columns: false,
                        unique: true,
                    },
                ),
            ]
            .into(),
        };
        // UPDATE orders o … FROM unnest(…) u WHERE o.id = u.id
        let by_pk: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Update",
                "Relation Name": "orders", "Alias": "o", "Plans": [
                {"Node Type": "Nested Loop", "Plans": [
                    {"Node Type": "Function Scan", "Alias": "u"},
                    {"Node Type": "Index Scan", "Index Name": "orders_pkey",
                     "Relation Name": "orders", "Alias": "o"}]}]}}]"#,
        )
        .unwrap();
        let a = analyze(&by_pk, &catalog);
        assert!(a.writes_off_the_key(&catalog, 1000).is_empty());
        assert!(a.big_seq_scans(&catalog, 1000).is_empty());
        assert!(!a.limit);
        // A bitmap scan of a unique key, and a Seq Scan of the same table in a CTE.
        let by_key: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
                "Relation Name": "orders", "Alias": "orders", "Plans": [
                {"Node Type": "Limit", "Parent Relationship": "InitPlan", "Plans": [
                    {"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "orders_1"}]},
                {"Node Type": "Bitmap Heap Scan", "Relation Name": "orders", "Alias": "orders",
                 "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "orders_key"}]}]}}]"#,
        )
        .unwrap();
        let a = analyze(&by_key, &catalog);
        assert_eq!(
            a.writes_off_the_key(&catalog, 1000),
            vec![
                "DELETE of orders finds its rows by orders_key (Bitmap Index Scan), not by its \
                 primary key (a unique key: one row)"
            ]
        );
        // Small tables are read as the planner likes.
        assert!(a.writes_off_the_key(&catalog, 10_000).is_empty());
        assert_eq!(a.big_seq_scans(&catalog, 1000), vec!["orders"]);
        assert!(a.big_seq_scans(&catalog, 10_000).is_empty());
        assert!(a.limit);
    }
}
