//! What the tests of the fake share: a small JSON protocol of their own (a price feed's
//! subscriptions), a plain tokio-tungstenite client, and a way to catch the fake's panics.
#![allow(dead_code)] // each test file uses a part of it

use std::time::Duration;

use fake_ws_server::{FakeServer, Matcher};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What the client sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Up {
    Subscribe { topic: String },
    Unsubscribe { topic: String },
    Ack { id: u64 },
}

/// What the fake sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Down {
    Subscribed { topic: String },
    Price { topic: String, price: u64 },
}

pub type Fake = FakeServer<Up, Down>;
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn subscribe(topic: &str) -> Up {
    Up::Subscribe {
        topic: topic.into(),
    }
}

/// `subscribe` to this topic.
pub fn subscribe_to(topic: &str) -> Matcher<Up> {
    let topic = topic.to_owned();
    Matcher::new(
        format!("subscribe to {topic}"),
        move |m| matches!(m, Up::Subscribe { topic: t } if *t == topic),
    )
}

/// The `ack` of this id.
pub fn ack_of(id: u64) -> Matcher<Up> {
    Matcher::new(
        format!("ack of {id}"),
        move |m| matches!(m, Up::Ack { id: i } if *i == id),
    )
}

/// Answers every `subscribe` with `subscribed`.
pub fn subscribed(message: &Up) -> Vec<Down> {
    match message {
        Up::Subscribe { topic } => vec![Down::Subscribed {
            topic: topic.clone(),
        }],
        _ => Vec::new(),
    }
}

/// Any `subscribe`.
pub fn any_subscribe() -> Matcher<Up> {
    Matcher::new("any subscribe", |m| matches!(m, Up::Subscribe { .. }))
}

pub async fn connect(url: &str) -> Client {
    try_connect(url).await.expect("connect")
}

pub async fn try_connect(url: &str) -> Result<Client, WsError> {
    let request = url.into_client_request().unwrap();
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

pub async fn send(client: &mut Client, message: &Up) {
    client
        .send(Message::Text(
            serde_json::to_string(message).unwrap().into(),
        ))
        .await
        .unwrap();
}

/// The next text frame, decoded.
pub async fn receive(client: &mut Client) -> Down {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("a Down");
        }
    }
}

/// Runs `f` and returns its panic message (the fake fails tests by panicking).
pub async fn panic_message<F: std::future::Future<Output = ()> + Send + 'static>(f: F) -> String {
    let error = tokio::spawn(f).await.expect_err("should have panicked");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
