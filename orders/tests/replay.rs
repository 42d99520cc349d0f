//! Orders against a replay of the real Payments, with no Payments running: the fake
//! plays `fixtures/one_order.jsonl`, which e2e's `record_replay` test recorded between
//! the real Orders and the real Payments (and checks still has the same shape). One
//! order gets the recorded payment page and outcome; and when Orders leaves the
//! recording (here, a recording edited to expect another method), the failure shows
//! the diff.

mod helpers;

use helpers::TestApp;
use serde_json::Value;
use shared_protocol::SUBPROTOCOL;
use test_harness::{FakeServer, Matcher, RecordedKind, Recording, Replay};

fn fixture() -> Recording {
    Recording::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/one_order.jsonl"
    ))
    .expect("the recorded order")
}

/// The recorded message of type `kind`.
fn recorded(recording: &Recording, kind: &str) -> Value {
    recording
        .frames()
        .iter()
        .filter_map(|f| match &f.kind {
            RecordedKind::Text { text } => serde_json::from_str::<Value>(text).ok(),
            _ => None,
        })
        .find(|m| m["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the recording"))
}

/// A fake Payments replaying `recording`: the order id is Orders' own each run, so it
/// is echoed (ignored when matching, and the recorded one replaced in the answers).
async fn replaying(recording: Recording) -> FakeServer<Value, Value> {
    FakeServer::<Value, Value>::builder()
        .subprotocol(SUBPROTOCOL)
        .replay(Replay::new(recording).echo_fields(["/order_id"]))
        .start()
        .await
}

/// Orders, started while `fake` refuses connections, creates the recorded order (its
/// amount and currency are compared); then the fake accepts Orders' connection.
async fn order_while_the_link_is_down(
    fake: &FakeServer<Value, Value>,
) -> (
    TestApp,
    helpers::Order,
    test_harness::Connection<Value, Value>,
) {
    fake.refuse_connections();
    let app = TestApp::spawn(&fake.url()).await;
    let order = app.create_order(1999, "EUR").await;
    fake.accept_connections();
    let conn = fake.next_connection().await;
    (app, order, conn)
}

fn of_type(kind: &'static str) -> Matcher<Value> {
    Matcher::new(kind, move |m: &Value| m["type"] == kind)
}

#[tokio::test]
async fn an_order_is_paid_as_the_recorded_payments_said() {
    let recording = fixture();
    let page = recorded(&recording, "payment_page");
    let fake = replaying(recording).await;
    // The order is created while the link is down, and reaches Payments by the walk
    // Orders makes on connecting. Created on a live link, it can be sent twice, by
    // `POST /orders` and by that walk when it is still running (Orders sends at least
    // once; Payments takes a repeat as one), and a replay takes the repeat for a
    // client that left the recording.
    let (app, order, conn) = order_while_the_link_is_down(&fake).await;

    let fulfilled = app.wait_for_status(order.id(), "fulfilled").await;
    assert_eq!(fulfilled.0["payment_method"], "credit_card");
    assert_eq!(fulfilled.0["payment_url"], page["url"]);
    // Orders acked the recorded event: the recording is played to its end.
    conn.expect(of_type("ack")).await;
    assert_eq!(
        app.get(&format!("/orders/{}/invoice", order.id()))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_order_that_leaves_the_recording_fails_with_the_diff() {
    // The recording, edited: Payments expected Orders to pick PayPal.
    let frames = fixture()
        .frames()
        .iter()
        .cloned()
        .map(|mut frame| {
            if let RecordedKind::Text { text } = &mut frame.kind {
                let mut message: Value = serde_json::from_str(text).unwrap();
                if message["type"] == "select_payment_method" {
                    message["method"] = "paypal".into();
                    *text = message.to_string();
                }
            }
            frame
        })
        .collect();
    let fake = replaying(Recording::new(frames)).await;
    // Created while the link is down, so it is sent once (see the test above).
    let (app, order, conn) = order_while_the_link_is_down(&fake).await;
    conn.expect(of_type("select_payment_method")).await;

    let problems = fake.problems();
    let failure = problems
        .iter()
        .find(|p| p.contains("does not match the recording"))
        .unwrap_or_else(|| panic!("no deviation among {problems:?}"));
    for part in [
        "connection 0: the client's message does not match the recording at line 3 (frame 3 of connection 0",
        "(- recorded, + received); ignored: /order_id:",
        "    -   \"method\": \"paypal\",",
        "    +   \"method\": \"credit_card\",",
        "  ▶ ",
        "client → fake  text {\"type\":\"select_payment_method\"",
    ] {
        assert!(failure.contains(part), "{part:?} is not in:\n{failure}");
    }
    // Nothing answered it: the order waits for its page.
    assert_eq!(app.order(order.id()).await.status(), "pending_payment");
    // And the fake's drop check fails the test with it.
    drop(conn);
    let dropped = tokio::spawn(async move { drop(fake) })
        .await
        .expect_err("the drop check fails");
    let message = dropped.into_panic();
    let message = message.downcast_ref::<String>().expect("a message");
    assert!(
        message.contains("    +   \"method\": \"credit_card\","),
        "{message}"
    );
}
