//! The smallest scenario end to end: `loadgen smoke` against the real Orders and
//! Payments binaries, on fresh databases, checked through its JSON report.
//!
//! PostgreSQL is `DATABASE_URL` when set (loadgen creates and drops its own databases
//! on that server), else loadgen's default, `postgres://postgres@127.0.0.1:5432`.
//! The binaries are `LOADGEN_ORDERS_BIN`/`LOADGEN_PAYMENTS_BIN` when set; otherwise
//! this test builds the debug ones with `cargo build -p orders -p payments` (nothing to
//! do after `cargo test --workspace`, which builds them) and takes them from this
//! test's own target directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const FLOWS: u64 = 30;

fn binaries() -> (PathBuf, PathBuf) {
    if let (Some(orders), Some(payments)) = (
        std::env::var_os("LOADGEN_ORDERS_BIN"),
        std::env::var_os("LOADGEN_PAYMENTS_BIN"),
    ) {
        return (orders.into(), payments.into());
    }
    // target/<profile>/deps/smoke-<hash> → target/<profile>
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "orders", "-p", "payments"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build -p orders -p payments failed");
    (profile_dir.join("orders"), profile_dir.join("payments"))
}

#[tokio::test]
async fn smoke_runs_every_flow_to_one_invoice_against_the_real_services() {
    let (orders, payments) = binaries();
    assert!(orders.is_file(), "{} missing", orders.display());
    assert!(payments.is_file(), "{} missing", payments.display());
    let out = std::env::temp_dir().join(format!("loadgen-smoke-test-{}", std::process::id()));
    let json = out.join("report.json");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.arg("smoke");
    // The server the other tests use, as scripts/test sets it up.
    if let Ok(url) = std::env::var("DATABASE_URL") {
        command.arg("--database-url").arg(url);
    }
    let mut child = command
        .arg(format!("--count={FLOWS}"))
        .arg("--concurrency=4")
        .arg("--orders-bin")
        .arg(&orders)
        .arg("--payments-bin")
        .arg(&payments)
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .arg("--deadline=60s")
        .arg("--commit=test")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting loadgen");
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .expect("loadgen smoke finished within 180 s")
        .expect("waiting for loadgen");

    let Ok(bytes) = std::fs::read(&json) else {
        panic!("loadgen smoke wrote no report ({status}); its error is above");
    };
    let report: serde_json::Value = serde_json::from_slice(&bytes).expect("the report is JSON");
    assert!(
        status.success(),
        "loadgen smoke failed ({status}): {report:#}"
    );
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == name))
            .and_then(|f| f["value"].as_f64())
    };
    assert_eq!(figure("flows completed"), Some(FLOWS as f64), "{report:#}");
    let checks = report["checks"].as_array().expect("checks");
    let invoices = checks
        .iter()
        .find(|c| c["name"] == "exactly one invoice per fulfilled order")
        .expect("the invoice check");
    assert_eq!(invoices["ok"], true, "{invoices}");
    assert!(
        invoices["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{FLOWS} invoices for {FLOWS} orders")),
        "{invoices}"
    );
    for check in checks {
        assert_eq!(check["ok"], true, "failed check: {check}");
    }
    let flow = report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "flow (end to end)"))
        .expect("the end-to-end stage");
    assert_eq!(flow["count"], FLOWS, "{flow}");
    assert!(report["services"].as_array().is_some_and(|s| s.len() == 2));
    let _ = std::fs::remove_dir_all(&out);
}
