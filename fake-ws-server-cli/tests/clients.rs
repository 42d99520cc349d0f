//! The Python and Node helpers in `clients/` drive this binary in their own tests, with
//! a real client of their language each (Python's `websockets`, Node's `ws`). These
//! two tests run them, so `cargo test` (and CI, through `scripts/test`) covers them.
//!
//! What they need is installed by `scripts/test`: a virtualenv at
//! `clients/python/.venv` with `requirements-test.txt`, and `clients/node/node_modules`
//! from `package-lock.json` (`npm ci`). Missing, a test fails and says how to make it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Each suite takes a few seconds; this only stops a hung one from hanging `cargo test`.
const SUITE_DEADLINE: Duration = Duration::from_secs(180);

fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `program args` in `dir` with the binary under test in `FAKE_WS_SERVER_BIN`, and
/// fails with everything it printed unless it succeeds within the deadline.
async fn run_suite(dir: &Path, program: &Path, args: &[&str]) {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("FAKE_WS_SERVER_BIN", env!("CARGO_BIN_EXE_fake-ws-server"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
    let output = tokio::time::timeout(SUITE_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} did not finish within {SUITE_DEADLINE:?}",
                program.display()
            )
        })
        .expect("its output");
    assert!(
        output.status.success(),
        "{} {} in {} failed ({}):\n{}\n{}",
        program.display(),
        args.join(" "),
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn require(path: &Path, how: &str) {
    assert!(
        path.exists(),
        "{} is missing. scripts/test makes it; by hand: {how}",
        path.display()
    );
}

#[tokio::test]
async fn the_python_helper_drives_the_fake_against_websockets() {
    let dir = clients().join("python");
    let python = dir.join(".venv/bin/python");
    require(
        &python,
        &format!(
            "cd {} && python3 -m venv .venv && .venv/bin/pip install -r requirements-test.txt",
            dir.display()
        ),
    );
    let args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"];
    run_suite(&dir, &python, &args).await;
}

#[tokio::test]
async fn the_node_helper_drives_the_fake_against_ws() {
    let dir = clients().join("node");
    require(
        &dir.join("node_modules/ws"),
        &format!("cd {} && npm ci", dir.display()),
    );
    run_suite(&dir, Path::new("node"), &["--test", "test/"]).await;
}
