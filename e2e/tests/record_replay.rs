//! Records Orders talking to the real Payments for one paid order, through
//! fake-ws-server's recording proxy, and checks that the recording has the shape of
//! the fixture Orders' replay tests play back (`orders/tests/fixtures/one_order.jsonl`):
//! so the fixture stays what the real Payments says. `RECORD_FIXTURE=1` writes the new
//! recording over the fixture (then commit it).

use e2e::Stack;
use serde_json::Value;
use test_harness::{Recording, RecordingProxy, Sender};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../orders/tests/fixtures/one_order.jsonl"
);

/// One paid order on the link, as who sent what type of message, in order.
const ONE_ORDER: [(Sender, &str); 6] = [
    (Sender::Client, "initiate_payment"),
    (Sender::Server, "payment_methods"),
    (Sender::Client, "select_payment_method"),
    (Sender::Server, "payment_page"),
    (Sender::Server, "payment_state"),
    (Sender::Client, "ack"),
];

/// Each frame as its connection, sender and message type (its kind if not JSON).
fn shape(recording: &Recording) -> Vec<(usize, Sender, String)> {
    recording
        .frames()
        .iter()
        .map(|f| {
            let kind = match &f.kind {
                test_harness::RecordedKind::Text { text } => serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|m| m["type"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("text {text}")),
                other => format!("{other:?}"),
            };
            (f.connection, f.from, kind)
        })
        .collect()
}

fn json(recording: &Recording, index: usize) -> Value {
    match &recording.frames()[index].kind {
        test_harness::RecordedKind::Text { text } => serde_json::from_str(text).unwrap(),
        other => panic!("frame {index} is not text: {other:?}"),
    }
}

#[tokio::test]
async fn one_order_recorded_between_orders_and_payments_has_the_fixtures_shape() {
    let mut stack = Stack::spawn_payments().await;
    let proxy = RecordingProxy::builder(stack.payments_ws_url())
        .default_deadline(e2e::DEADLINE)
        .start()
        .await;
    stack.start_orders_via(proxy.url()).await;
    let order = stack.create_order(1999, "EUR").await;
    let url = stack.payment_url(order).await;
    stack.press(&url, "complete").await;
    stack.wait_status(order, "fulfilled").await;
    proxy.wait_for_frames(ONE_ORDER.len()).await; // the ack follows the commit

    let recording = proxy.recording().expect("recorded within the limits");
    let recording = Recording::new(recording.frames()[..ONE_ORDER.len()].to_vec());
    let expected: Vec<_> = ONE_ORDER
        .iter()
        .map(|(from, kind)| (0, *from, (*kind).to_owned()))
        .collect();
    assert_eq!(shape(&recording), expected, "{}", recording.to_jsonl());
    // Every message about the order carries its id; the ack acks the event.
    for index in 0..5 {
        assert_eq!(json(&recording, index)["order_id"], order.to_string());
    }
    assert_eq!(json(&recording, 1)["methods"][0], "credit_card");
    assert_eq!(json(&recording, 3)["url"], url);
    assert_eq!(json(&recording, 4)["state"], "FULFILL");
    assert_eq!(
        json(&recording, 5)["event_id"],
        json(&recording, 4)["event_id"]
    );

    if std::env::var_os("RECORD_FIXTURE").is_some() {
        recording.save(FIXTURE).expect("write the fixture");
    }
    let fixture = Recording::load(FIXTURE).expect("the fixture");
    assert_eq!(
        shape(&fixture),
        shape(&recording),
        "the fixture no longer has the shape of what Orders and Payments say: run this test with RECORD_FIXTURE=1 and commit {FIXTURE}"
    );
}
