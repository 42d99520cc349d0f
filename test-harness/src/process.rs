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
        let mut env = vec![("APP_ENV", "production")];
        env.extend(token.map(|token| ("PAYMENTS_TOKEN", token)));
        assert_refuses_to_start(binary, &env, "APP_ENV is production: set PAYMENTS_TOKEN");
    }
}

/// Runs `binary` with only `env` set (plus a `DATABASE_URL` with a password, to a server
/// that is not there) and asserts that it refuses to start before opening anything,
/// saying `expected`, and echoes none of the secrets it was given: the tokens (but the
/// public development token) and the database password.
pub fn assert_refuses_to_start(binary: &str, env: &[(&str, &str)], expected: &str) {
    let output = Command::new(binary)
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://u:db-pa55word@127.0.0.1:1/nowhere",
        )
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "started with {env:?}: {said}");
    assert!(said.contains(expected), "{expected:?} not in: {said}");
    let secrets = env
        .iter()
        .filter(|(name, value)| name.ends_with("_TOKEN") && *value != "dev-token")
        .map(|(_, value)| *value)
        .chain(["db-pa55word"]);
    for secret in secrets.filter(|s| s.len() >= 4) {
        assert!(!said.contains(secret), "{secret:?} echoed: {said}");
    }
}
