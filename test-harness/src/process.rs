//! Tests that run a service's binary itself (`env!("CARGO_BIN_EXE_…")`): a port to give
//! it, a bounded wait for its exit, and the check both services' binaries share.
//! These live here, not in service-kit, because only tests use them.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (a binary must be told its port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("the bound address")
        .port()
}

/// Waits up to `within` for `child` to exit; kills and reaps it otherwise (no zombie
/// is left behind) and returns `None`. Blocking: call it from `spawn_blocking` in
/// async tests.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().expect("the child's status") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `APP_ENV=production` with the public development token (the default, or set
/// explicitly) must be refused before anything is opened, with a message that says what
/// to set, and without echoing the secrets it was given.
pub fn assert_production_refuses_the_development_token(binary: &str) {
    for token in [None, Some("dev-token")] {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("APP_ENV", "production")
            .env(
                "DATABASE_URL",
                "postgres://u:db-pa55word@127.0.0.1:1/nowhere",
            )
            .env("LOG_FORMAT", "json");
        if let Some(token) = token {
            command.env("PAYMENTS_TOKEN", token);
        }
        let output = command.output().expect("run the binary");
        assert!(!output.status.success(), "started with {token:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stderr.contains("APP_ENV is production") && stderr.contains("set PAYMENTS_TOKEN"),
            "{stderr}"
        );
        assert!(
            !format!("{stdout}{stderr}").contains("db-pa55word"),
            "{stdout}{stderr}"
        );
    }
}
