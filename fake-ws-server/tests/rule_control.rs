//! Rules at wiremock's level, driven by a plain tokio-tungstenite client: count
//! expectations and ranges, `up_to_n_times`, names, priorities, rules mounted after
//! start or on one connection, and responses made of steps.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use fake_ws_server::{FakeServer, FrameKind, Matcher, Response, Rule, Times};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Fake = FakeServer<Value, Value>;

async fn connect(url: &str) -> Client {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(client: &mut Client, message: Value) {
    client
        .send(Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next frame, within a generous deadline.
async fn next_frame(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a frame within 5 s")
        .expect("the connection is open")
        .expect("no error")
}

/// The next text frame, as JSON.
async fn receive(client: &mut Client) -> Value {
    match next_frame(client).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn typed(kind: &'static str) -> Matcher<Value> {
    Matcher::new(format!("type = {kind}"), move |m: &Value| m["type"] == kind)
}

fn panic_message(f: impl FnOnce()) -> String {
    let panic = std::panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn times_are_counts_or_ranges() {
    let cases: [(Times, &str, &[usize], &[usize]); 6] = [
        (2.into(), "2", &[2], &[0, 1, 3]),
        ((1..).into(), "at least 1", &[1, 2, 100], &[0]),
        ((..=3).into(), "at most 3", &[0, 3], &[4]),
        ((2..=4).into(), "between 2 and 4", &[2, 3, 4], &[1, 5]),
        ((2..5).into(), "between 2 and 4", &[2, 4], &[1, 5]),
        ((..).into(), "any number of times", &[0, 7], &[]),
    ];
    for (times, shown, met, unmet) in cases {
        assert_eq!(times.to_string(), shown);
        for &n in met {
            assert!(times.contains(n), "{times} should accept {n}");
        }
        for &n in unmet {
            assert!(!times.contains(n), "{times} should refuse {n}");
        }
    }
    let message = panic_message(|| {
        let _ = Times::from(3..3);
    });
    assert!(message.contains("the range is empty"), "{message}");
}

#[tokio::test]
async fn count_expectations_are_checked_with_the_rules_name_and_location() {
    let fake: Fake = FakeServer::builder()
        .rule(
            Rule::when(typed("ping"), |_| vec![json!({"type": "pong"})])
                .named("pong")
                .times(1..),
        )
        .rule(
            Rule::when(typed("hello"), |_| Vec::new())
                .named("greeting")
                .times(..=1),
        )
        .on(typed("never"), |_| Vec::new())
        .named("never sent")
        .times(1..=2)
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    for _ in 0..2 {
        send(&mut client, json!({"type": "ping"})).await;
        assert_eq!(receive(&mut client).await, json!({"type": "pong"}));
        send(&mut client, json!({"type": "hello"})).await;
    }
    conn.wait_for_frames(6).await;

    let problems = fake.problems();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("the rule \"greeting\" for type = hello (mounted at ")
            && problems[0].contains("tests/rule_control.rs")
            && problems[0].ends_with("fired 2 times, expected at most 1"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("the rule \"never sent\" for type = never")
            && problems[1].ends_with("fired 0 times, expected between 1 and 2"),
        "{problems:#?}"
    );
    let message = panic_message(move || drop(fake));
    assert!(
        message.contains("fired 2 times, expected at most 1"),
        "{message}"
    );
}

#[tokio::test]
async fn up_to_n_times_answers_n_times_then_falls_through_to_the_next_rule() {
    let fake: Fake = FakeServer::builder()
        .on(typed("ping"), |_| vec![json!({"n": "first"})])
        .up_to_n_times(2)
        .times(2)
        .on(typed("ping"), |_| vec![json!({"n": "then"})])
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        send(&mut client, json!({"type": "ping"})).await;
        answers.push(receive(&mut client).await["n"].clone());
    }
    assert_eq!(answers, ["first", "first", "then"]);
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

#[tokio::test]
async fn with_up_to_n_times_and_no_other_rule_the_message_is_left_to_the_test() {
    let fake: Fake = FakeServer::builder()
        .on(typed("ping"), |_| vec![json!({"type": "pong"})])
        .up_to_n_times(1)
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "ping", "n": 1})).await;
    assert_eq!(receive(&mut client).await, json!({"type": "pong"}));
    send(&mut client, json!({"type": "ping", "n": 2})).await;
    conn.expect(Matcher::new("n = 2", |m: &Value| m["n"] == 2))
        .await;
    // Not answered: no rule in the transcript, and strict verification would have
    // failed the test had it not been expected.
    let notes: Vec<_> = conn.transcript().into_iter().map(|e| e.note).collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(notes[2], None);
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

#[tokio::test]
async fn a_higher_priority_answers_first_and_equal_priorities_go_by_mount_order() {
    let fake: Fake = FakeServer::builder()
        .on(Matcher::any(), |_| vec![json!("default, mounted first")])
        .on(Matcher::any(), |_| vec![json!("default, mounted second")])
        .rule(
            Rule::when(typed("urgent"), |_| vec![json!("priority 1")])
                .with_priority(1)
                .named("urgent"),
        )
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "urgent"})).await;
    assert_eq!(receive(&mut client).await, "priority 1");
    send(&mut client, json!({"type": "other"})).await;
    assert_eq!(receive(&mut client).await, "default, mounted first");
    let notes: Vec<_> = conn
        .transcript()
        .into_iter()
        .filter_map(|entry| entry.note)
        .collect();
    assert_eq!(
        notes,
        [
            "answered by the rule \"urgent\" for type = urgent",
            "answered by the rule for any message"
        ]
    );
}

#[test]
fn priority_zero_is_a_misuse_that_says_what_to_do() {
    let message = panic_message(|| {
        let _ = Rule::<Value, Value>::on(Matcher::any()).with_priority(0);
    });
    assert!(message.contains("use with_priority(1)"), "{message}");
}

#[tokio::test]
async fn rules_mounted_after_start_answer_open_connections() {
    let fake: Fake = FakeServer::builder().start().await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "ping", "n": 1})).await;
    conn.expect(typed("ping")).await;

    fake.mount(Rule::when(typed("ping"), |_| vec![json!({"type": "pong"})]).times(1));
    send(&mut client, json!({"type": "ping", "n": 2})).await;
    assert_eq!(receive(&mut client).await, json!({"type": "pong"}));
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

#[tokio::test]
async fn a_rule_scoped_to_a_connection_answers_only_there_and_first() {
    let fake: Fake = FakeServer::builder()
        .on(typed("ping"), |_| vec![json!("server-wide")])
        .start()
        .await;
    let mut first = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    let mut second = connect(&fake.url()).await;
    let _other = fake.next_connection().await;

    conn.mount(
        Rule::when(typed("ping"), |_| vec![json!("scoped")])
            .named("only here")
            .times(2),
    );
    send(&mut first, json!({"type": "ping"})).await;
    assert_eq!(receive(&mut first).await, "scoped");
    send(&mut second, json!({"type": "ping"})).await;
    assert_eq!(receive(&mut second).await, "server-wide");

    // Fired once, expected twice: dropping the connection's handle reports it.
    let message = panic_message(move || drop(conn));
    assert!(
        message.contains("the rule \"only here\" for type = ping")
            && message.contains("scoped to connection 0) fired 1 times, expected 2"),
        "{message}"
    );
    // Reported once: the server does not report it again.
    assert!(fake.problems().is_empty(), "{:#?}", fake.problems());
}

#[tokio::test]
async fn a_response_sends_typed_raw_and_binary_frames_then_closes() {
    let fake: Fake = FakeServer::builder()
        .on(typed("hello"), |m| {
            Response::new()
                .send(json!({"echo": m["n"]}))
                .text("not json")
                .binary(vec![1, 2, 3])
                .close(4000, "done")
        })
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "hello", "n": 7})).await;
    assert_eq!(receive(&mut client).await, json!({"echo": 7}));
    assert_eq!(next_frame(&mut client).await, Message::text("not json"));
    assert_eq!(
        next_frame(&mut client).await,
        Message::binary(vec![1, 2, 3])
    );
    match next_frame(&mut client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "done");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let sent: Vec<_> = conn
        .transcript()
        .into_iter()
        .map(|entry| entry.frame)
        .collect();
    assert_eq!(
        sent.last(),
        Some(&FrameKind::Close {
            code: Some(4000),
            reason: "done".into()
        })
    );
}

#[tokio::test]
async fn a_response_can_wait_a_delay_between_steps() {
    let fake: Fake = FakeServer::builder()
        .on(typed("slow"), |_| {
            Response::new()
                .send(json!("now"))
                .delay(Duration::from_millis(300))
                .send(json!("later"))
        })
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let _conn = fake.next_connection().await;
    send(&mut client, json!({"type": "slow"})).await;
    assert_eq!(receive(&mut client).await, "now");
    let first = Instant::now();
    assert_eq!(receive(&mut client).await, "later");
    assert!(first.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_response_can_abort_the_tcp_connection() {
    let fake: Fake = FakeServer::builder()
        .on(typed("crash"), |_| {
            Response::new().send(json!("bye")).abort()
        })
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "crash"})).await;
    assert_eq!(receive(&mut client).await, "bye");
    let end = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the connection ends within 5 s");
    assert!(
        matches!(end, Some(Err(_)) | None),
        "expected a reset, got {end:?}"
    );
    let _ = conn.wait_closed().await;
    assert!(!conn.is_open());
}

#[tokio::test]
async fn a_response_can_stall_the_connection_until_the_test_resumes_it() {
    let fake: Fake = FakeServer::builder()
        .on(typed("stall"), |_| {
            Response::new().send(json!("stalling")).stall()
        })
        .on(typed("ping"), |_| vec![json!("pong")])
        .start()
        .await;
    let mut client = connect(&fake.url()).await;
    let conn = fake.next_connection().await;
    send(&mut client, json!({"type": "stall"})).await;
    assert_eq!(receive(&mut client).await, "stalling");
    send(&mut client, json!({"type": "ping"})).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.next())
            .await
            .is_err(),
        "a stalled connection answered"
    );
    assert!(conn.is_open());
    conn.resume_reading().await;
    assert_eq!(receive(&mut client).await, "pong");
}
