//! The client's close frame as it was on the wire: its code and reason as sent (not
//! tungstenite's substitute 1002), and what RFC 6455 forbids in it (codes such as
//! 1006, a 1-byte payload, a reason that is not UTF-8) as a protocol violation that
//! `expect_invalid` takes and the drop check reports.
//!
//! Most clients here are raw: a TCP stream that does the upgrade and then writes
//! hand-made masked frames, since a WebSocket library may refuse to write them.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Closed, Direction, FrameKind, TranscriptEntry};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long a raw client waits for the fake's bytes.
const WAIT: Duration = Duration::from_secs(5);

/// A raw client: a TCP stream past the WebSocket upgrade.
async fn raw_connect(fake: &Fake) -> TcpStream {
    let addr = fake.addr();
    let path = fake.url().replace(&format!("ws://{addr}"), "");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // The response, byte by byte up to its blank line: nothing after it is read.
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, tcp.read_u8()).await;
        response.push(byte.expect("the upgrade's response in time").unwrap());
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    tcp
}

/// A masked client frame with this first byte (FIN, opcode) and payload (at most 125).
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut frame = vec![first, 0x80 | u8::try_from(payload.len()).unwrap()];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A close frame's payload: the code, then the reason.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

/// Writes a close frame with this raw payload, and returns what the fake wrote back
/// until it closed the TCP connection.
async fn raw_close(tcp: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    tcp.write_all(&masked(0x88, payload)).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    // A reset instead of a FIN is an end too.
    let _ = read.expect("the fake ends the connection in time");
    answer
}

/// The close code of the fake's (unmasked, short) close frame at the start of `bytes`.
fn answered_code(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [0x88, len, high, low, ..] if *len >= 2 => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// The client's close frame in the transcript.
fn client_close(entries: &[TranscriptEntry]) -> TranscriptEntry {
    entries
        .iter()
        .find(|e| {
            e.direction == Direction::FromClient && matches!(e.frame, FrameKind::Close { .. })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no close frame from the client: {entries:#?}"))
}

#[tokio::test]
async fn a_client_closing_with_1006_is_recorded_with_1006_and_is_a_protocol_violation() {
    // What ezsockets 0.7.2 does when its heartbeat times out: tungstenite writes the
    // code it is given, 1006 included.
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    let close = CloseFrame {
        code: 1006.into(),
        reason: "heartbeat timeout".into(),
    };
    client.close(Some(close)).await.unwrap();

    let closed = conn.wait_closed().await;
    assert_eq!(
        closed,
        Closed::Frame {
            code: 1006,
            reason: "heartbeat timeout".into()
        }
    );
    assert_eq!(closed.code(), Some(1006));
    let entry = client_close(&conn.transcript());
    assert_eq!(
        entry.frame,
        FrameKind::Close {
            code: Some(1006),
            reason: "heartbeat timeout".into()
        }
    );
    assert!(entry.to_string().contains("close 1006"), "{entry}");
    assert!(
        entry
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("forbidden close code 1006"),
        "{entry}"
    );

    let invalid = conn.expect_invalid().await;
    assert_eq!(invalid.frame, entry.frame);
    assert!(
        invalid.error.contains("forbidden close code 1006"),
        "{}",
        invalid.error
    );
    assert_eq!(fake.problems(), Vec::<String>::new());

    // The fake's tungstenite answers a forbidden code with 1002, its substitute.
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1002),
        other => panic!("expected the fake's close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forbidden_close_code_nobody_took_fails_the_drop_check() {
    let fake = Fake::builder().lenient().start().await;
    let mut tcp = raw_connect(&fake).await;
    let conn = fake.next_connection().await;
    let answer = raw_close(&mut tcp, &close_payload(1006, b"")).await;
    assert_eq!(answered_code(&answer), Some(1002), "{answer:?}");
    assert_eq!(conn.wait_closed().await.code(), Some(1006));

    let problems = fake.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("forbidden close code 1006"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("protocol violation, a close frame RFC 6455 forbids")
            && !problems[0].contains("contract violation"),
        "{problems:?}"
    );
    let message = panic_message(async move { drop(fake) }).await;
    assert!(message.contains("forbidden close code 1006"), "{message}");
    assert!(message.contains("close 1006"), "{message}");
}

#[tokio::test]
async fn allowed_codes_are_recorded_as_sent_and_are_no_violation() {
    let fake = Fake::builder().start().await;
    for code in [1000, 1001, 1003, 1011, 1014, 3000, 4000, 4999] {
        let mut tcp = raw_connect(&fake).await;
        let conn = fake.next_connection().await;
        let answer = raw_close(&mut tcp, &close_payload(code, b"bye")).await;
        // Echoed, except 1014, which this tungstenite takes for a forbidden code.
        let echoed = if code == 1014 { 1002 } else { code };
        assert_eq!(answered_code(&answer), Some(echoed), "{code}: {answer:?}");
        assert_eq!(
            conn.wait_closed().await,
            Closed::Frame {
                code,
                reason: "bye".into()
            }
        );
        let entry = client_close(&conn.transcript());
        assert_eq!(entry.note, None, "{entry}");
    }
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn every_forbidden_code_is_recorded_as_sent_and_taken_by_expect_invalid() {
    let fake = Fake::builder().start().await;
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let mut tcp = raw_connect(&fake).await;
        let conn = fake.next_connection().await;
        raw_close(&mut tcp, &close_payload(code, b"")).await;
        assert_eq!(conn.wait_closed().await.code(), Some(code));
        let invalid = conn.expect_invalid().await;
        assert_eq!(
            invalid.frame,
            FrameKind::Close {
                code: Some(code),
                reason: String::new()
            }
        );
        let forbidden = format!("forbidden close code {code}");
        assert!(invalid.error.contains(&forbidden), "{}", invalid.error);
    }
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn an_empty_close_is_a_close_without_code_and_no_violation() {
    // RFC 6455, 7.1.5: an empty close payload is allowed, and reported as 1005 ("no
    // status"), a code that only a close frame *with* a code can carry illegally.
    let fake = Fake::builder().start().await;
    let mut tcp = raw_connect(&fake).await;
    let conn = fake.next_connection().await;
    let answer = raw_close(&mut tcp, b"").await;
    assert_eq!(answer.get(..2), Some(&[0x88, 0][..]), "{answer:?}");
    assert_eq!(conn.wait_closed().await, Closed::FrameWithoutCode);
    let entry = client_close(&conn.transcript());
    assert_eq!(
        entry.frame,
        FrameKind::Close {
            code: None,
            reason: String::new()
        }
    );
    assert!(
        entry.to_string().contains("without a code (1005)"),
        "{entry}"
    );
    assert_eq!(entry.note, None);
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn a_close_tungstenite_cannot_read_is_still_recorded_and_flagged() {
    let fake = Fake::builder().start().await;

    // A 1-byte payload: too short for a code, too long for none.
    let mut tcp = raw_connect(&fake).await;
    let conn = fake.next_connection().await;
    let answer = raw_close(&mut tcp, &[0x03]).await;
    assert_eq!(answered_code(&answer), None, "no answer: {answer:?}");
    assert_eq!(conn.wait_closed().await, Closed::FrameWithoutCode);
    let invalid = conn.expect_invalid().await;
    assert!(invalid.error.contains("1 byte"), "{}", invalid.error);

    // A reason that is not UTF-8: the code is allowed, the frame is not.
    let mut tcp = raw_connect(&fake).await;
    let conn = fake.next_connection().await;
    raw_close(&mut tcp, &close_payload(1000, b"caf\xe9")).await;
    assert_eq!(
        conn.wait_closed().await,
        Closed::Frame {
            code: 1000,
            reason: "caf\u{fffd}".into()
        }
    );
    let invalid = conn.expect_invalid().await;
    assert!(invalid.error.contains("not UTF-8"), "{}", invalid.error);
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn data_frames_before_a_close_in_one_write_keep_their_order() {
    let fake = Fake::builder().start().await;
    let mut tcp = raw_connect(&fake).await;
    let conn = fake.next_connection().await;
    let text = serde_json::to_vec(&subscribe("btc")).unwrap();
    let bytes = [
        masked(0x81, &text),
        masked(0x88, &close_payload(4000, b"done")),
    ]
    .concat();
    tcp.write_all(&bytes).await.unwrap();

    conn.expect(subscribe_to("btc")).await;
    assert_eq!(conn.wait_closed().await.code(), Some(4000));
    let frames: Vec<_> = conn
        .transcript()
        .into_iter()
        .filter(|e| e.direction == Direction::FromClient)
        .map(|e| e.frame)
        .collect();
    assert!(matches!(frames[0], FrameKind::Text(_)), "{frames:?}");
    assert_eq!(
        frames[1],
        FrameKind::Close {
            code: Some(4000),
            reason: "done".into()
        }
    );
}
