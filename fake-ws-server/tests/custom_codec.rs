//! Message types without serde: `FakeServer::builder_with_codec` takes any `Codec`, so
//! `In` and `Out` need only `Debug + Clone + Send` (`In`) and `Send` (`Out`), as with
//! protobuf types or a hand-written binary format. Here the format is one tag byte and a
//! big-endian `u32`, and neither message type derives anything from serde.

use fake_ws_server::testing::{connect, receive_binary, send_frame};
use fake_ws_server::{Codec, FakeServer, FrameKind, Matcher, Payload};
use tokio_tungstenite::tungstenite::Message;

/// What the client sends: no serde derive, only what the fake needs.
#[derive(Debug, Clone, PartialEq)]
enum Up {
    Ping(u32),
    Bye,
}

/// What the fake sends: not even `Debug`.
struct Pong(u32);

/// Tag 1 + u32 is a ping, tag 2 alone is bye; anything else is a contract violation.
struct TagCodec;

impl Codec<Up, Pong> for TagCodec {
    fn decode(&self, payload: &Payload) -> Result<Up, String> {
        let Payload::Binary(bytes) = payload else {
            return Err("a text frame; this format is binary".into());
        };
        match bytes.as_slice() {
            [1, a, b, c, d] => Ok(Up::Ping(u32::from_be_bytes([*a, *b, *c, *d]))),
            [2] => Ok(Up::Bye),
            other => Err(format!("not a message of this format: {other:?}")),
        }
    }

    fn encode(&self, message: &Pong) -> Result<Payload, String> {
        let mut bytes = vec![3];
        bytes.extend_from_slice(&message.0.to_be_bytes());
        Ok(Payload::Binary(bytes))
    }
}

fn ping_frame(seq: u32) -> Message {
    let mut bytes = vec![1];
    bytes.extend_from_slice(&seq.to_be_bytes());
    Message::binary(bytes)
}

fn is_ping() -> Matcher<Up> {
    Matcher::new("a ping", |m| matches!(m, Up::Ping(_)))
}

#[tokio::test]
async fn a_rule_answers_and_expect_takes_messages_of_a_type_without_serde() {
    let fake = FakeServer::builder_with_codec(TagCodec)
        .on(is_ping(), |m| match m {
            Up::Ping(seq) => vec![Pong(*seq)],
            Up::Bye => vec![],
        })
        .times(1)
        .start()
        .await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;

    send_frame(&mut client, ping_frame(7)).await;
    assert_eq!(receive_binary(&mut client).await, [3, 0, 0, 0, 7]);
    send_frame(&mut client, Message::binary(vec![2])).await;
    assert_eq!(
        conn.expect(Matcher::new("bye", |m| *m == Up::Bye)).await,
        Up::Bye
    );

    conn.send(Pong(9)).await.expect("encodes and sends");
    assert_eq!(receive_binary(&mut client).await, [3, 0, 0, 0, 9]);
}

#[tokio::test]
async fn a_frame_the_codec_refuses_is_a_contract_violation() {
    let fake = FakeServer::<Up, Pong>::builder_with_codec(TagCodec)
        .start()
        .await;
    let mut client = connect(fake.url()).await;
    let conn = fake.next_connection().await;

    send_frame(&mut client, Message::binary(vec![9, 9])).await;
    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, FrameKind::Binary(vec![9, 9]));
    assert_eq!(invalid.error, "not a message of this format: [9, 9]");
}
