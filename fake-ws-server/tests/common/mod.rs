//! What the tests of the fake share: a small JSON protocol of their own (a price feed's
//! subscriptions) over the plain tokio-tungstenite client of `fake_ws_server::testing`
//! (shared with test-harness's tests), and `open`, a client and its connection at once.
#![allow(dead_code, unused_imports)] // each test file uses a part of it

use std::fmt;

pub use fake_ws_server::testing::{
    Client, assert_no_frame, connect, panic_message, receive_text, send_frame, try_connect,
};
use fake_ws_server::{Connection, FakeServer, Matcher};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

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

/// Connects a plain client to `fake` and takes its connection: how most tests begin.
pub async fn open<In, Out>(fake: &FakeServer<In, Out>) -> (Client, Connection<In, Out>)
where
    In: DeserializeOwned + fmt::Debug + Clone + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let client = connect(&fake.url()).await;
    (client, fake.next_connection().await)
}

pub async fn send(client: &mut Client, message: &Up) {
    send_frame(
        client,
        Message::Text(serde_json::to_string(message).unwrap().into()),
    )
    .await;
}

/// The next text frame, decoded.
pub async fn receive(client: &mut Client) -> Down {
    serde_json::from_str(&receive_text(client).await).expect("a Down")
}
