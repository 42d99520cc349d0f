//! Pluggable codecs: JSON in text frames by default, MessagePack and CBOR in binary
//! frames (features `msgpack`, `cbor`); the typed layer (expect, rules, send) works
//! through each, and a frame of the wrong kind is a contract violation only because the
//! codec says so.

mod common;

use std::time::Duration;

use common::{Client, open, send_frame};
use fake_ws_server::{
    CborCodec, Codec, FakeServer, FrameKind, JsonCodec, Matcher, MsgPackCodec, Payload,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Subscribe { symbol: String },
    Unsubscribe { symbol: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    Subscribed { symbol: String },
    Price { symbol: String, cents: u64 },
}

fn subscribe(symbol: &str) -> Request {
    Request::Subscribe {
        symbol: symbol.into(),
    }
}

fn is_subscribe() -> Matcher<Request> {
    Matcher::new("subscribe", |m| matches!(m, Request::Subscribe { .. }))
}

/// The next data frame from the fake, within 5 s.
async fn next_data(client: &mut Client) -> Message {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if frame.is_text() || frame.is_binary() {
            return frame;
        }
    }
}

/// Answers every subscribe with `subscribed`, then checks one round trip each way, one
/// typed send, and that a frame of the other kind is refused, with `codec` encoding
/// what the client sends and decoding what it receives.
async fn round_trip(codec: impl Codec<Event, Request>, server_codec: impl Codec<Request, Event>) {
    let server = FakeServer::<Request, Event>::builder()
        .codec(server_codec)
        .on(is_subscribe(), |m| match m {
            Request::Subscribe { symbol } => vec![Event::Subscribed {
                symbol: symbol.clone(),
            }],
            Request::Unsubscribe { .. } => vec![],
        })
        .start()
        .await;
    let (mut client, conn) = open(&server).await;

    // client → fake, answered by the rule through the codec
    let frame = codec.encode(&subscribe("ACME")).expect("encodes");
    send_frame(&mut client, message(frame)).await;
    let reply = next_data(&mut client).await;
    assert_eq!(
        codec
            .decode(&payload(reply))
            .expect("the rule's reply decodes"),
        Event::Subscribed {
            symbol: "ACME".into()
        }
    );

    // client → fake, taken by expect
    let unsubscribe = Request::Unsubscribe {
        symbol: "ACME".into(),
    };
    let frame = codec.encode(&unsubscribe).expect("encodes");
    send_frame(&mut client, message(frame)).await;
    let got = conn
        .expect(Matcher::new("unsubscribe", |m| {
            matches!(m, Request::Unsubscribe { .. })
        }))
        .await;
    assert_eq!(got, unsubscribe);

    // fake → client, typed
    let price = Event::Price {
        symbol: "ACME".into(),
        cents: 12_345,
    };
    conn.send(price.clone()).await.unwrap();
    let frame = next_data(&mut client).await;
    assert_eq!(codec.decode(&payload(frame)).expect("decodes"), price);
}

fn message(payload: Payload) -> Message {
    match payload {
        Payload::Text(text) => Message::Text(text.into()),
        Payload::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

fn payload(message: Message) -> Payload {
    match message {
        Message::Text(text) => Payload::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => Payload::Binary(bytes.to_vec()),
        other => panic!("not a data frame: {other:?}"),
    }
}

#[tokio::test]
async fn json_in_text_frames_is_the_default_and_a_binary_frame_is_a_violation() {
    round_trip(JsonCodec, JsonCodec).await;

    let server = FakeServer::<Request, Event>::builder().start().await;
    let (mut client, conn) = open(&server).await;
    conn.send(Event::Subscribed {
        symbol: "ACME".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        next_data(&mut client).await,
        Message::Text(r#"{"type":"subscribed","symbol":"ACME"}"#.into())
    );
    send_frame(&mut client, Message::Binary(vec![1, 2, 3].into())).await;
    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, FrameKind::Binary(vec![1, 2, 3]));
    assert!(invalid.error.contains("binary"), "{}", invalid.error);
}

#[tokio::test]
async fn messagepack_in_binary_frames_and_a_text_frame_is_a_violation() {
    round_trip(MsgPackCodec, MsgPackCodec).await;

    let server = FakeServer::<Request, Event>::builder()
        .codec(MsgPackCodec)
        .start()
        .await;
    let (mut client, conn) = open(&server).await;
    // What goes on the wire is MessagePack with field names, in a binary frame.
    conn.send(Event::Subscribed {
        symbol: "ACME".into(),
    })
    .await
    .unwrap();
    let Message::Binary(bytes) = next_data(&mut client).await else {
        panic!("MessagePack comes in a binary frame");
    };
    let value: serde_json::Value = rmp_serde::from_slice(&bytes).expect("MessagePack");
    assert_eq!(
        value,
        serde_json::json!({"type": "subscribed", "symbol": "ACME"})
    );

    let json = serde_json::to_string(&subscribe("ACME")).unwrap();
    send_frame(&mut client, Message::Text(json.clone().into())).await;
    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, FrameKind::Text(json));
    assert!(invalid.error.contains("text frame"), "{}", invalid.error);
    // Bytes that are not MessagePack of a Request: a violation too, with rmp-serde's reason.
    send_frame(&mut client, Message::Binary(vec![0xc1].into())).await;
    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, FrameKind::Binary(vec![0xc1]));
}

#[tokio::test]
async fn cbor_in_binary_frames_and_a_text_frame_is_a_violation() {
    round_trip(CborCodec, CborCodec).await;

    let server = FakeServer::<Request, Event>::builder()
        .codec(CborCodec)
        .start()
        .await;
    let (mut client, conn) = open(&server).await;
    send_frame(&mut client, Message::Text("{}".into())).await;
    let invalid = conn.expect_invalid().await;
    assert!(invalid.error.contains("CBOR"), "{}", invalid.error);
}

#[tokio::test]
async fn the_raw_layer_bypasses_the_codec() {
    let server = FakeServer::<Request, Event>::builder()
        .codec(MsgPackCodec)
        .start()
        .await;
    let (mut client, conn) = open(&server).await;
    conn.send_text("not MessagePack").await.unwrap();
    assert_eq!(
        next_data(&mut client).await,
        Message::Text("not MessagePack".into())
    );
    conn.send_binary(vec![9]).await.unwrap();
    assert_eq!(
        next_data(&mut client).await,
        Message::Binary(vec![9].into())
    );
}

/// An `Out` the codec cannot encode.
#[derive(Debug)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Unencodable never serialises"))
    }
}

#[tokio::test]
#[should_panic(expected = "could not encode a rule's reply")]
async fn a_rule_reply_the_codec_cannot_encode_fails_the_test_at_drop() {
    let server = FakeServer::<Request, Unencodable>::builder()
        .on(is_subscribe(), |_| vec![Unencodable])
        .start()
        .await;
    let (mut client, _conn) = open(&server).await;
    let json = serde_json::to_string(&subscribe("ACME")).unwrap();
    send_frame(&mut client, Message::Text(json.into())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.problems().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no problem recorded within 5 s"
        );
        tokio::task::yield_now().await;
    }
    let problems = server.problems();
    assert!(
        problems[0].contains("Unencodable never serialises"),
        "{problems:?}"
    );
    // Dropping the server now fails the test with that problem.
}
