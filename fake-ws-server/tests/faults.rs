//! Protocol faults mid-scenario: `send_fault` writes a frame RFC 6455 forbids, past
//! tungstenite, and a tokio-tungstenite client takes each for a protocol error.

mod common;

use std::time::Duration;

use common::*;
use fake_ws_server::{Closed, Direction, Fault, FrameKind, SendError};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What the client read next: a frame, an error, or the end; within 5 s.
async fn next(client: &mut Client) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the client read something within 5 s")
}

/// Sends `fault` on a new connection and returns the client's error, after checking
/// the fault is the fake's last transcript entry.
async fn client_error(fake: &Fake, fault: Fault) -> WsError {
    let (mut client, conn) = open(fake).await;
    conn.send_fault(fault.clone()).await.unwrap();
    let last = conn
        .transcript()
        .pop()
        .expect("the fault is in the transcript");
    assert_eq!(last.direction, Direction::ToClient);
    assert!(matches!(last.frame, FrameKind::Raw(_)), "{last}");
    let note = last.note.clone().unwrap_or_default();
    assert_eq!(note, format!("fault: {fault}"));
    match next(&mut client).await {
        Some(Err(e)) => e,
        other => panic!("{fault}: expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn each_fault_is_a_protocol_error_of_a_tungstenite_client() {
    let fake = Fake::builder().start().await;
    let error = client_error(&fake, Fault::InvalidUtf8).await;
    assert!(matches!(error, WsError::Utf8(_)), "{error:?}");
    let cases = [
        (Fault::ReservedBits, ProtocolError::NonZeroReservedBits),
        (Fault::MaskedFrame, ProtocolError::MaskedFrameFromServer),
        (Fault::OversizedControl, ProtocolError::ControlFrameTooBig),
        (
            Fault::FragmentedControl,
            ProtocolError::FragmentedControlFrame,
        ),
    ];
    for (fault, expected) in cases {
        let error = client_error(&fake, fault.clone()).await;
        assert!(
            matches!(&error, WsError::Protocol(p) if *p == expected),
            "{fault}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_forbidden_close_code_is_answered_with_1002() {
    let fake = Fake::builder().start().await;
    for code in [1005, 1006, 1015, 2000] {
        let (mut client, conn) = open(&fake).await;
        conn.send_fault(Fault::CloseCode(code)).await.unwrap();
        match next(&mut client).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1002, "{code}");
                assert_eq!(frame.reason.as_str(), "Protocol violation");
            }
            other => panic!("{code}: expected tungstenite's close 1002, got {other:?}"),
        }
        // Reading on sends the client's answer, its close 1002 (a legal code: no
        // violation). The fake's tungstenite, which did not write the fault, answers
        // that too, after the client's close: an error for tungstenite.
        let after = next(&mut client).await;
        assert!(matches!(after, None | Some(Err(_))), "{after:?}");
        assert_eq!(conn.wait_closed().await.code(), Some(1002));
        let raw = conn.transcript()[0].clone();
        assert_eq!(
            raw.frame,
            FrameKind::Raw(vec![0x88, 2, (code >> 8) as u8, code as u8])
        );
    }
    assert_eq!(fake.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn a_truncated_frame_then_a_reset_ends_the_connection() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.send_fault(Fault::TruncatedThenReset).await.unwrap();
    match next(&mut client).await {
        Some(Err(
            WsError::Io(_) | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        )) => {}
        other => panic!("expected a reset mid-frame, got {other:?}"),
    }
    assert_eq!(conn.wait_closed().await, Closed::Aborted);
    assert_eq!(
        conn.send_fault(Fault::InvalidUtf8).await,
        Err(SendError::Closed(Closed::Aborted))
    );
    assert_eq!(conn.transcript().len(), 1, "{:?}", conn.transcript());
}

#[tokio::test]
async fn a_fault_comes_after_the_frames_sent_before_it() {
    let fake = Fake::builder().start().await;
    let (mut client, conn) = open(&fake).await;
    conn.send_text("first").await.unwrap();
    conn.send_fragmented(
        Down::Price {
            topic: "btc".into(),
            price: 1,
        },
        4,
    )
    .await;
    // An unknown opcode (0x3), through the escape hatch.
    conn.send_fault(Fault::Raw(vec![0x83, 0])).await.unwrap();

    assert_eq!(receive_text(&mut client).await, "first");
    assert!(receive_text(&mut client).await.contains("btc"));
    match next(&mut client).await {
        Some(Err(WsError::Protocol(ProtocolError::InvalidOpcode(3)))) => {}
        other => panic!("expected an unknown opcode, got {other:?}"),
    }
    let transcript = conn.transcript();
    assert_eq!(transcript.len(), 3, "{transcript:?}");
    assert!(
        transcript[2].to_string().contains("raw (2 bytes)"),
        "{}",
        transcript[2]
    );
}

#[tokio::test]
async fn a_fault_on_an_ended_connection_is_an_error_and_not_sent() {
    let fake = Fake::builder().start().await;
    let (client, conn) = open(&fake).await;
    drop(client);
    assert_eq!(conn.wait_closed().await, Closed::Dropped);
    assert_eq!(
        conn.send_fault(Fault::ReservedBits).await,
        Err(SendError::Closed(Closed::Dropped))
    );
    assert!(conn.transcript().is_empty(), "{:?}", conn.transcript());
}
