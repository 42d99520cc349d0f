//! Replay: a recording played back as the fake, the client's messages matched against
//! the recorded ones (ignored and echoed fields), and the failure when they differ.

use std::time::{Duration, Instant};

use fake_ws_server::testing::{assert_no_frame, connect, receive_text, send_frame};
use fake_ws_server::{FakeServer, Recording, RecordingProxy, Replay, Rule, json_includes};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// One line of a recording: `from` sent `json` on connection 0 at `at_ms`.
fn line(at_ms: u64, from: &str, json: Value) -> String {
    let frame = json!({"at_ms": at_ms, "connection": 0, "from": from, "kind": "text", "text": json.to_string()});
    format!("{frame}\n")
}

/// A greeting, then an order placed and answered twice (a page, then its outcome).
fn orders_recording() -> Recording {
    let text = [
        line(0, "server", json!({"type": "hello"})),
        line(
            10,
            "client",
            json!({"type": "place", "order_id": "o-1", "trace": {"id": "t1"}, "amount": 5}),
        ),
        line(
            12,
            "server",
            json!({"type": "page", "order_id": "o-1", "url": "/pay/p-9"}),
        ),
        line(
            20,
            "server",
            json!({"type": "paid", "order": {"id": "o-1"}}),
        ),
        line(30, "client", json!({"type": "ack", "order_id": "o-1"})),
    ]
    .concat();
    Recording::from_jsonl(&text).unwrap()
}

fn replaying(replay: Replay) -> fake_ws_server::FakeServerBuilder<Value, Value> {
    FakeServer::json().replay(replay)
}

#[tokio::test]
async fn a_replay_greets_and_answers_matching_messages_echoing_the_clients_ids() {
    let replay = Replay::new(orders_recording())
        .ignore_fields(["/trace/id"])
        .echo_fields(["/order_id"])
        .without_delays();
    let fake = replaying(replay).start().await;
    let mut client = connect(fake.url()).await;
    assert_eq!(receive_text(&mut client).await, r#"{"type":"hello"}"#);
    let place = json!({"type": "place", "order_id": "o-2", "trace": {"id": "t2"}, "amount": 5});
    send_frame(&mut client, Message::text(place.to_string())).await;
    let page: Value = serde_json::from_str(&receive_text(&mut client).await).unwrap();
    assert_eq!(
        page,
        json!({"type": "page", "order_id": "o-2", "url": "/pay/p-9"})
    );
    // The echoed id is replaced wherever the answer has it, nested too.
    let paid: Value = serde_json::from_str(&receive_text(&mut client).await).unwrap();
    assert_eq!(paid, json!({"type": "paid", "order": {"id": "o-2"}}));
    send_frame(
        &mut client,
        Message::text(r#"{"type":"ack","order_id":"o-2"}"#),
    )
    .await;
    let conn = fake.next_connection().await;
    conn.wait_for_frames(5).await;
    assert_eq!(
        conn.transcript()[1].note.as_deref(),
        Some("answered by the replay")
    );
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

#[tokio::test]
async fn a_replay_keeps_the_recorded_delays_unless_told_not_to() {
    let text = [
        line(0, "client", json!({"type": "go"})),
        line(300, "server", json!({"type": "late"})),
    ]
    .concat();
    let fake = replaying(Replay::new(Recording::from_jsonl(&text).unwrap()))
        .start()
        .await;
    let mut client = connect(fake.url()).await;
    let sent = Instant::now();
    send_frame(&mut client, Message::text(r#"{"type":"go"}"#)).await;
    // Timers never fire early: the answer cannot come before its 300 ms.
    assert_no_frame(
        &mut client,
        Duration::from_millis(150),
        "answered before the recorded delay",
    )
    .await;
    assert_eq!(receive_text(&mut client).await, r#"{"type":"late"}"#);
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_leaves_the_recording_fails_with_a_diff_the_place_and_the_transcript() {
    let replay = Replay::new(orders_recording())
        .echo_fields(["/order_id"])
        .without_delays();
    let fake = replaying(replay).start().await;
    let mut client = connect(fake.url()).await;
    receive_text(&mut client).await;
    let place = json!({"type": "place", "order_id": "o-2", "trace": {"id": "t1"}, "amount": 7});
    send_frame(&mut client, Message::text(place.to_string())).await;
    let conn = fake.next_connection().await;
    conn.wait_for_frames(2).await;
    // Nothing answers a message that left the recording.
    assert_no_frame(
        &mut client,
        Duration::from_millis(50),
        "answered a deviation",
    )
    .await;

    let problems = fake.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let failure = &problems[0];
    for part in [
        "connection 0: the client's message does not match the recording at line 2 (frame 2 of connection 0",
        "(- recorded, + received); ignored: /order_id:",
        "    -   \"amount\": 5,",
        "    +   \"amount\": 7,",
        "the recording's connection 0 (▶ where the client left it):",
        "  ▶    0.010s  client → server  text {",
        "transcript:",
        "fake → client  text {\"type\":\"hello\"}",
        "client → fake  text {\"amount\":7",
    ] {
        assert!(failure.contains(part), "{part:?} is not in:\n{failure}");
    }
    assert_eq!(
        conn.transcript()[1].note.as_deref(),
        Some("left the recording")
    );
    drop(conn);
    // The drop check reports it: the fake is taken apart here, lenient on the rest.
    let dropped = fake_ws_server::testing::panic_message(async move { drop(fake) }).await;
    assert!(
        dropped.contains("does not match the recording at line 2"),
        "{dropped}"
    );
}

#[tokio::test]
async fn a_client_that_stops_short_or_opens_too_many_connections_is_reported() {
    let replay = Replay::new(orders_recording()).without_delays();
    let fake = replaying(replay).start().await;
    let mut first = connect(fake.url()).await;
    receive_text(&mut first).await;
    let mut second = connect(fake.url()).await;
    fake.wait_for_connections(2).await;
    assert_no_frame(
        &mut second,
        Duration::from_millis(50),
        "greeted a connection the recording lacks",
    )
    .await;
    let problems = fake.problems();
    assert!(
        problems.iter().any(|p| p.starts_with(
            "connection 1: the client opened a connection the recording does not have (it has 1)"
        )),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("connection 0: the client stopped short of the recording: 2 recorded client message(s) never came, the next at line 2")),
        "{problems:?}"
    );
    let _ = fake_ws_server::testing::panic_message(async move { drop(fake) }).await;
}

#[tokio::test]
async fn a_rule_answers_before_the_replay() {
    let fake = replaying(Replay::new(orders_recording()).without_delays())
        .rule(Rule::when(json_includes!({"type": "ping"}), |_| {
            vec![json!({"type": "pong"})]
        }))
        .start()
        .await;
    let mut client = connect(fake.url()).await;
    receive_text(&mut client).await;
    send_frame(&mut client, Message::text(r#"{"type":"ping"}"#)).await;
    assert_eq!(receive_text(&mut client).await, r#"{"type":"pong"}"#);
    let _ = fake_ws_server::testing::panic_message(async move { drop(fake) }).await;
}

#[tokio::test]
async fn what_a_proxy_recorded_replays_as_the_server() {
    // The "real" server, recorded once.
    let server = FakeServer::json()
        .rule(Rule::when(json_includes!({"type": "join"}), |m: &Value| {
            vec![json!({"type": "joined", "who": m["who"]})]
        }))
        .start()
        .await;
    let proxy = RecordingProxy::builder(server.url()).start().await;
    let mut client = connect(proxy.url()).await;
    send_frame(&mut client, Message::text(r#"{"type":"join","who":"ann"}"#)).await;
    assert_eq!(
        receive_text(&mut client).await,
        r#"{"type":"joined","who":"ann"}"#
    );
    proxy.wait_for_frames(2).await;
    let recording = proxy.recording().unwrap();
    drop(client);
    drop(server);

    // The same exchange, without the server, whoever joins.
    let fake = replaying(Replay::new(recording).echo_fields(["/who"]))
        .start()
        .await;
    let mut client = connect(fake.url()).await;
    send_frame(&mut client, Message::text(r#"{"type":"join","who":"bob"}"#)).await;
    assert_eq!(
        receive_text(&mut client).await,
        r#"{"type":"joined","who":"bob"}"#
    );
    client.close(None).await.unwrap();
    while client.next().await.is_some() {}
}
