//! Failures point at the test's line: the panic's own location (what the test runner
//! prints after "panicked at") is the `.await` of the wait that failed, and the message
//! begins with the call's location; a failure at drop names where the server started.

mod common;

use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const SHORT: Duration = Duration::from_millis(50);

/// Runs `test` on this thread with `futures_executor`, expecting it to panic: the
/// panic's location and message.
///
/// The panic hook is global and `cargo test` runs tests on threads of one process: one
/// test at a time holds it, or one's `take_hook` would remove another's.
fn panic_of(test: impl std::future::Future<Output = ()>) -> (String, u32, String) {
    static HOOK: Mutex<()> = Mutex::new(());
    let _hook = HOOK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let seen: Arc<Mutex<Option<(String, u32)>>> = Arc::default();
    let previous = Arc::new(panic::take_hook());
    let this = std::thread::current().id();
    {
        let seen = seen.clone();
        let previous = previous.clone();
        panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == this {
                let at = info.location().expect("a location");
                *seen.lock().unwrap() = Some((at.file().to_owned(), at.line()));
            }
            previous(info);
        }));
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| futures_executor::block_on(test)));
    let _ = panic::take_hook();
    let payload = result.expect_err("the test should have failed");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    let (file, line) = seen.lock().unwrap().take().expect("the hook saw the panic");
    (file, line, message)
}

fn this_file() -> &'static str {
    Location::caller().file()
}

#[test]
fn a_failed_next_connection_panics_at_the_tests_await() {
    let mut line = 0;
    let (file, at, message) = panic_of(async {
        let fake = Fake::builder().default_deadline(SHORT).start().await;
        line = line!() + 1;
        fake.next_connection().await;
        unreachable!();
    });
    assert_eq!(file, this_file());
    assert_eq!(at, line, "{message}");
    let first = message.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:{line}:", this_file())),
        "{message}"
    );
}

#[test]
fn a_failed_expectation_panics_at_the_tests_await() {
    let mut line = 0;
    let (file, at, message) = panic_of(async {
        let fake = Fake::builder().start().await;
        let url = fake.url();
        let client = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut client = connect(&url).await;
                send(&mut client, &subscribe("eth")).await;
                client
            })
        });
        let conn = fake.next_connection().await;
        conn.wait_for_frames(1).await;
        let _client = client.join().unwrap();
        line = line!() + 1;
        conn.expect_within(subscribe_to("btc"), SHORT).await;
        unreachable!();
    });
    assert_eq!((file.as_str(), at), (this_file(), line), "{message}");
    assert!(message.contains("expected subscribe to btc"), "{message}");
}

/// A fake with a client that stays connected and never reads, on a thread of its
/// own: `wait` fails a wait on its connection and sets `line` to the line it fails at,
/// where the panic must point. The panic's message.
fn panic_of_a_wait_on_a_silent_client(
    wait: impl AsyncFnOnce(&fake_ws_server::Connection<Up, Down>, &mut u32),
) -> String {
    let mut line = 0;
    let (file, at, message) = panic_of(async {
        let fake = Fake::builder().start().await;
        let url = fake.url();
        let (done, held) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let _client = connect(&url).await;
                let _ = held.recv();
            })
        });
        let conn = fake.next_connection().await;
        wait(&conn, &mut line).await;
        drop(done);
        unreachable!();
    });
    assert_eq!((file.as_str(), at), (this_file(), line), "{message}");
    message
}

#[test]
fn an_unanswered_ping_and_no_invalid_frame_panic_at_the_tests_await() {
    let message = panic_of_a_wait_on_a_silent_client(async |conn, line| {
        conn.ping(b"anyone?".to_vec()).await;
        *line = line!() + 1;
        conn.expect_pong_within(SHORT).await;
    });
    assert!(message.contains("expected a pong"), "{message}");
    let message = panic_of_a_wait_on_a_silent_client(async |conn, line| {
        *line = line!() + 1;
        conn.expect_invalid_within(SHORT).await;
    });
    assert!(
        message.contains("expected a frame that is not a valid message"),
        "{message}"
    );
}

#[test]
fn a_failure_at_drop_names_where_the_server_started_first() {
    let mut line = 0;
    let (_, _, message) = panic_of(async {
        line = line!() + 1;
        let fake = Fake::builder().start().await;
        let url = fake.url();
        let client = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let mut client = connect(&url).await;
                send(&mut client, &subscribe("eth")).await;
                client
            })
        });
        let conn = fake.next_connection().await;
        conn.wait_for_frames(1).await;
        let _client = client.join().unwrap();
        drop(fake);
        drop(conn);
    });
    let first = message.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:{line}:", this_file())),
        "{message}"
    );
}
