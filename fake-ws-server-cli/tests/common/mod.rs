//! The standalone fake as its tests see it: the real binary, started with port 0,
//! its ready line read, its admin API driven with reqwest, and a real WebSocket
//! client against it.
#![allow(dead_code)] // each test file uses a part of it

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for anything from the binary or the client.
pub const WAIT: Duration = Duration::from_secs(10);

pub const BINARY: &str = env!("CARGO_BIN_EXE_fake-ws-server");

/// A running `fake-ws-server`, killed when dropped.
pub struct Fake {
    pub child: Child,
    pub ws_url: String,
    pub admin_url: String,
    /// The whole ready line.
    pub ready: Value,
    http: reqwest::Client,
}

impl Fake {
    /// Starts the binary with `args` and reads its ready line.
    pub async fn spawn(args: &[&str]) -> Fake {
        let mut child = Command::new(BINARY)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start fake-ws-server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("a ready line in time")
            .unwrap();
        let ready: Value = serde_json::from_str(&line).expect("the ready line is JSON");
        Fake {
            child,
            ws_url: ready["ws_url"].as_str().unwrap().to_owned(),
            admin_url: ready["admin_url"].as_str().unwrap().to_owned(),
            ready,
            http: reqwest::Client::new(),
        }
    }

    /// Starts the binary with a scenario file holding `scenario`.
    pub async fn with_scenario(scenario: &Value) -> Fake {
        let path = temp_file(&scenario.to_string());
        Fake::spawn(&["--scenario", path.to_str().unwrap()]).await
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.admin_url))
            .timeout(WAIT * 7)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `GET path`: the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.admin_url))
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `POST path` with a JSON body: the status and the JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.admin_url))
            .json(&body)
            .timeout(WAIT * 7)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `POST path` with an empty body, which must succeed: the JSON body.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.post(path, Value::Null).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    /// A fake started with no arguments, a client connected to it, and the fake's side
    /// of that connection handed out (`POST /connections/next`): connection 0.
    pub async fn with_a_client() -> (Fake, Client) {
        let fake = Fake::spawn(&[]).await;
        let client = fake.connect().await;
        fake.ok("/connections/next").await;
        (fake, client)
    }

    /// Posts each `(path, body, status, says)` and checks that the fake answers with
    /// that status and an error containing `says`.
    pub async fn assert_refuses(&self, requests: &[(&str, Value, u16, &str)]) {
        for (path, body, status, says) in requests {
            let (got, answer) = self.post(path, body.clone()).await;
            assert_eq!(got, *status, "{path} {body}: {answer}");
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{path} {body}: {error}");
        }
    }

    /// Connection `id`'s transcript as failure messages show it.
    pub async fn rendered_transcript(&self, id: usize) -> String {
        let (status, transcript) = self.get(&format!("/connections/{id}/transcript")).await;
        assert_eq!(status, 200, "{transcript}");
        transcript["rendered"].as_str().unwrap().to_owned()
    }

    /// A client connected to the fake's URL.
    pub async fn connect(&self) -> Client {
        connect(&self.ws_url).await
    }
}

pub async fn connect(url: &str) -> Client {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect")
        .0
}

/// Sends `message` as JSON in a text frame.
pub async fn send_json(client: &mut Client, message: Value) {
    client
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next frame the client receives (not a ping or pong).
pub async fn receive(client: &mut Client) -> Option<Result<Message, String>> {
    loop {
        let frame = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(frame)) => return Some(Ok(frame)),
            Some(Err(e)) => return Some(Err(e.to_string())),
            None => return None,
        }
    }
}

/// The next frame the client receives, which must be JSON in a text frame.
pub async fn receive_json(client: &mut Client) -> Value {
    match receive(client).await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A `.json` file of its own under the temporary directory, holding `text`.
pub fn temp_file(text: &str) -> PathBuf {
    temp_file_ending(text, "json")
}

/// A file of its own under the temporary directory, named `*.{extension}`, holding
/// `text`.
pub fn temp_file_ending(text: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "fake-ws-server-cli-{}-{}.{extension}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}
