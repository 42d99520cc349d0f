//! A client with a binary codec, and its test against the fake.
//!
//! The client speaks a small quote protocol in MessagePack over binary frames: it sends
//! `subscribe` for a symbol, waits for `subscribed`, then collects `quote`s until it has
//! as many as it was asked for, and answers a `heartbeat` with an `alive` (a reply the
//! server may ask for at any time). The test below puts the fake in the server's place
//! with [`MsgPackCodec`](fake_ws_server::MsgPackCodec), so its rules, expectations and
//! sends are typed, and checks that a text frame from the client would be a contract
//! violation.
//!
//! Run the client against a server of your own:
//! `cargo run -p fake-ws-server --example binary_codec -- ws://127.0.0.1:9000/ws ACME`.
//! Its test runs with `cargo test -p fake-ws-server` (or `--examples`), as the
//! `[[example]]` entry of the crate's Cargo.toml sets `test = true`.

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Start sending quotes of `symbol`.
    Subscribe { symbol: String },
    /// The answer to a `heartbeat`.
    Alive { seq: u64 },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The subscription is on.
    Subscribed { symbol: String },
    /// A price, in cents.
    Quote { symbol: String, cents: u64 },
    /// Asks for an `alive` with the same `seq`.
    Heartbeat { seq: u64 },
}

/// The errors of the client, as text: it is an example.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connects to `url`, subscribes to `symbol` and returns its next `count` quotes (in
/// cents), answering heartbeats meanwhile.
pub async fn quotes(url: &str, symbol: &str, count: usize) -> Result<Vec<u64>, Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let encode = |request: &Request| -> Result<Message, Error> {
        Ok(Message::Binary(rmp_serde::to_vec_named(request)?.into()))
    };
    ws.send(encode(&Request::Subscribe {
        symbol: symbol.into(),
    })?)
    .await?;
    let mut subscribed = false;
    let mut prices = Vec::new();
    while prices.len() < count {
        let frame = ws
            .next()
            .await
            .ok_or("the server closed the connection")??;
        let event: Event = match frame {
            Message::Binary(bytes) => rmp_serde::from_slice(&bytes)?,
            Message::Close(frame) => return Err(format!("closed by the server: {frame:?}").into()),
            Message::Text(_) => return Err("a text frame: the protocol is MessagePack".into()),
            _ => continue,
        };
        match event {
            Event::Subscribed { symbol: s } if s == symbol => subscribed = true,
            Event::Quote { symbol: s, cents } if subscribed && s == symbol => prices.push(cents),
            Event::Heartbeat { seq } => ws.send(encode(&Request::Alive { seq })?).await?,
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await?;
    Ok(prices)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(symbol)) = (args.next(), args.next()) else {
        eprintln!("usage: binary_codec WS_URL SYMBOL   (prints the next 3 quotes of SYMBOL)");
        return Ok(());
    };
    for cents in quotes(&url, &symbol, 3).await? {
        println!("{symbol}: {}.{:02}", cents / 100, cents % 100);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_ws_server::{Direction, FakeServer, FrameKind, Matcher, MsgPackCodec};

    fn subscribe(symbol: &'static str) -> Matcher<Request> {
        Matcher::new(
            format!("subscribe to {symbol}"),
            move |m| matches!(m, Request::Subscribe { symbol: s } if s == symbol),
        )
    }

    #[tokio::test]
    async fn the_client_subscribes_collects_quotes_and_answers_heartbeats_in_messagepack() {
        let server = FakeServer::<Request, Event>::builder()
            .codec(MsgPackCodec)
            .on(subscribe("ACME"), |_| {
                vec![
                    Event::Subscribed {
                        symbol: "ACME".into(),
                    },
                    Event::Quote {
                        symbol: "ACME".into(),
                        cents: 10_150,
                    },
                ]
            })
            .start()
            .await;
        let url = server.url();
        let client = tokio::spawn(async move { quotes(&url, "ACME", 2).await });

        let conn = server.next_connection().await;
        conn.send(Event::Heartbeat { seq: 7 }).await.unwrap();
        conn.expect(Matcher::new("alive 7", |m| {
            matches!(m, Request::Alive { seq: 7 })
        }))
        .await;
        conn.send(Event::Quote {
            symbol: "ACME".into(),
            cents: 10_175,
        })
        .await
        .unwrap();

        let prices = client.await.expect("the client task").expect("the client");
        assert_eq!(prices, [10_150, 10_175]);
        conn.wait_closed().await;
        let closed = conn.transcript().into_iter().any(|e| {
            e.direction == Direction::FromClient
                && e.frame
                    == FrameKind::Close {
                        code: Some(1000),
                        reason: "done".into(),
                    }
        });
        assert!(
            closed,
            "the client closes with 1000: {:#?}",
            conn.transcript()
        );
    }

    #[tokio::test]
    async fn a_server_that_sends_text_is_an_error_of_the_client() {
        let server = FakeServer::<Request, Event>::builder()
            .codec(MsgPackCodec)
            .start()
            .await;
        let url = server.url();
        let client = tokio::spawn(async move { quotes(&url, "ACME", 1).await });
        let conn = server.next_connection().await;
        conn.expect(subscribe("ACME")).await;
        conn.send_text(r#"{"type":"subscribed","symbol":"ACME"}"#)
            .await
            .unwrap();
        let error = client.await.expect("the client task").unwrap_err();
        assert!(error.to_string().contains("MessagePack"), "{error}");
    }
}
