//! The standalone binary driven as a Python or Node test would: over its admin API,
//! with a real WebSocket client.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_scenario_rule_answers_and_greets_every_connection() {
    let fake = Fake::with_scenario(&json!({
        "rules": [{
            "match": {"json_includes": {"type": "ping"}},
            "reply": [{"type": "pong", "id": "{{/id}}"}],
            "times": {"at_least": 1},
            "name": "pong"
        }],
        "on_connect": [{"type": "welcome"}]
    }))
    .await;
    assert_it_greets_and_answers_a_ping(&fake).await;
}

/// What the scenario of `a_scenario_rule_answers_and_greets_every_connection` does:
/// a welcome on connect, a pong that echoes the ping's id, and nothing left for verify.
async fn assert_it_greets_and_answers_a_ping(fake: &Fake) {
    let mut client = fake.connect().await;
    assert_eq!(receive_json(&mut client).await, json!({"type": "welcome"}));
    send_json(&mut client, json!({"type": "ping", "id": 7})).await;
    assert_eq!(
        receive_json(&mut client).await,
        json!({"type": "pong", "id": 7})
    );
    assert_eq!(fake.ok("/verify").await, json!({"problems": []}));
}

#[tokio::test]
async fn next_connection_expect_and_send_round_trip() {
    let fake = Fake::spawn(&["--path", "/chat"]).await;
    assert!(fake.ws_url.ends_with("/chat"), "{}", fake.ws_url);
    let mut client = connect(&format!("{}?room=rust", fake.ws_url)).await;
    let conn = fake.ok("/connections/next?timeout_ms=5000").await;
    assert_eq!(
        (conn["id"].clone(), conn["path"].clone()),
        (json!(0), json!("/chat"))
    );
    assert_eq!(conn["query"], "room=rust");
    assert_eq!(conn["open"], true);

    send_json(&mut client, json!({"type": "join", "room": "rust"})).await;
    let (status, body) = fake
        .post(
            "/connections/0/expect",
            json!({"match": {"json_includes": {"type": "join"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["room"], "rust");

    let (status, body) = fake
        .post(
            "/connections/0/send",
            json!({"json": {"type": "said", "text": "hi"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(receive_json(&mut client).await["text"], "hi");
    fake.post("/connections/0/send", json!({"text": "raw"}))
        .await;
    assert_eq!(
        receive(&mut client).await.unwrap().unwrap(),
        Message::text("raw")
    );
    fake.post("/connections/0/send", json!({"binary_base64": "AAH/"}))
        .await;
    assert_eq!(
        receive(&mut client).await.unwrap().unwrap(),
        Message::binary(vec![0, 1, 255])
    );

    let (_, transcript) = fake.get("/connections/0/transcript").await;
    let entries = transcript["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{transcript}");
    assert_eq!(entries[0]["direction"], "from_client");
    assert_eq!(entries[3]["base64"], "AAH/");
    assert!(
        transcript["rendered"]
            .as_str()
            .unwrap()
            .contains("fake → client  text")
    );
    assert_eq!(fake.ok("/verify").await, json!({"problems": []}));
}

#[tokio::test]
async fn a_failed_expectation_says_why_with_the_transcript() {
    let fake = Fake::spawn(&[]).await;
    let mut client = fake.connect().await;
    send_json(&mut client, json!({"type": "say", "text": "hello"})).await;
    fake.ok("/connections/next").await;
    let (status, body) = fake
        .post(
            "/connections/0/expect",
            json!({"match": {"json_includes": {"type": "say", "text": "hi"}}, "timeout_ms": 300}),
        )
        .await;
    assert_eq!(status, 408, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("expected a message including"), "{error}");
    assert!(
        error.contains(r#"+   "text": "hello","#),
        "no diff: {error}"
    );
    assert!(
        error.contains(r#"client → fake  text {"text":"hello","type":"say"}"#)
            || error.contains(r#"client → fake  text {"type":"say","text":"hello"}"#),
        "no transcript: {error}"
    );
    // With `next`, another message first is a conflict.
    let (status, body) = fake
        .post(
            "/connections/0/expect",
            json!({"match": {"equals": {"type": "bye"}}, "next": true}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("but it was:"),
        "{body}"
    );
}

#[tokio::test]
async fn close_and_abort_reach_the_client() {
    let fake = Fake::spawn(&[]).await;
    let mut first = fake.connect().await;
    fake.ok("/connections/next").await;
    let (status, body) = fake
        .post(
            "/connections/0/close",
            json!({"code": 4001, "reason": "kicked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    match receive(&mut first).await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (4001, "kicked")
            );
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(receive(&mut first).await.is_none());
    let closed = fake.ok("/connections/0/wait-closed").await;
    assert_eq!(
        (closed["how"].clone(), closed["code"].clone()),
        (json!("frame"), json!(4001))
    );
    let (status, body) = fake
        .post("/connections/0/send", json!({"text": "late"}))
        .await;
    assert_eq!(status, 409, "{body}");

    let mut second = fake.connect().await;
    fake.ok("/connections/next").await;
    fake.ok("/connections/1/abort").await;
    assert!(
        matches!(receive(&mut second).await, None | Some(Err(_))),
        "an abort is no close frame"
    );
    assert_eq!(
        fake.ok("/connections/1/wait-closed").await["how"],
        "aborted"
    );
    let (_, connections) = fake.get("/connections").await;
    assert_eq!(connections[1]["open"], false, "{connections}");
    assert_eq!(connections[1]["closed"]["how"], "aborted", "{connections}");
}

#[tokio::test]
async fn a_refused_client_reconnects_after_a_restart() {
    let fake = Fake::spawn(&[]).await;
    fake.ok("/server/refuse").await;
    assert!(
        tokio_tungstenite::connect_async(fake.ws_url.as_str())
            .await
            .is_err()
    );
    let attempts = fake.ok("/attempts/wait?count=1").await;
    assert_eq!(attempts["attempts"][0]["outcome"], "refused", "{attempts}");
    fake.ok("/server/restart").await;
    let _client = fake.connect().await;
    let conn = fake.ok("/connections/next").await;
    assert_eq!(conn["id"], 0);
    let attempts = fake.ok("/attempts/wait?count=2").await;
    assert_eq!(attempts["attempts"][1]["outcome"], "accepted", "{attempts}");
    assert!(
        attempts["log"].as_str().unwrap().contains("Refused"),
        "{attempts}"
    );
}

#[tokio::test]
async fn a_handshake_rule_rejects_and_is_recorded() {
    let fake = Fake::spawn(&[]).await;
    let (status, body) = fake
        .post(
            "/handshake-rules",
            json!({"when": {"missing_header": "authorization"}, "status": 401, "body": "a token, please"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let refused = tokio_tungstenite::connect_async(fake.ws_url.as_str()).await;
    assert!(refused.unwrap_err().to_string().contains("401"));
    // Recorded a moment after the client read the 401: wait for it.
    let attempts = fake.ok("/attempts/wait?count=1").await;
    let attempt = &attempts["attempts"][0];
    assert_eq!(
        (attempt["outcome"].clone(), attempt["status"].clone()),
        (json!("rejected"), json!(401))
    );
}

#[tokio::test]
async fn verify_reports_an_unlooked_at_message_and_a_rule_short_of_its_times() {
    let fake = Fake::spawn(&[]).await;
    let (status, body) = fake
        .post(
            "/rules",
            json!({"match": {"equals": {"type": "ping"}}, "reply": [{"type": "pong"}], "times": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut client = fake.connect().await;
    send_json(&mut client, json!({"type": "surprise"})).await;
    let (status, body) = fake
        .post("/connections/0/wait-frames?count=1", json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    send_json(&mut client, json!({"type": "ping"})).await;
    assert_eq!(receive_json(&mut client).await, json!({"type": "pong"}));
    let problems = fake.ok("/verify").await["problems"].clone();
    let problems: Vec<&str> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no expectation or rule looked at") && p.contains("surprise")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("fired 1 times, expected 2")),
        "{problems:?}"
    );
    // The fake goes on after verify.
    send_json(&mut client, json!({"type": "ping"})).await;
    assert_eq!(receive_json(&mut client).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn bad_requests_are_answered_with_an_error_not_a_panic() {
    let fake = Fake::spawn(&[]).await;
    let (status, body) = fake.get("/connections/9/transcript").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "no connection 9");
    let (status, _) = fake.post("/connections/9/send", json!({"text": "x"})).await;
    assert_eq!(status, 404);
    let (status, body) = fake
        .post("/rules", json!({"match": {"jsn_includes": {}}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("jsn_includes"),
        "{body}"
    );
    let (status, body) = fake
        .post("/rules", json!({"match": "any", "priority": 0}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = fake
        .post("/connections/next?timeout_ms=600000", json!(null))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = fake
        .post("/connections/next?timeout_ms=50", json!(null))
        .await;
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no WebSocket connection"),
        "{body}"
    );
}

/// Runs the binary with `args`, which it must refuse before it serves anything (exit
/// code 2, nothing on stdout): what it said on stderr.
async fn refused_at_start(args: &[&str]) -> String {
    let output = tokio::process::Command::new(BINARY)
        .args(args)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "nothing served");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn an_invalid_scenario_exits_2_and_names_the_field() {
    let path = temp_file(r#"{"rules": [{"match": "any", "replies": []}]}"#);
    let stderr = refused_at_start(&["--scenario", path.to_str().unwrap()]).await;
    assert!(stderr.contains("unknown field `replies`"), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[tokio::test]
async fn a_yaml_scenario_is_read_as_the_json_one_is() {
    let path = temp_file_ending(
        r#"
# The same scenario as a_scenario_rule_answers_and_greets_every_connection's.
rules:
  - match: {json_includes: {type: ping}}
    reply:
      - {type: pong, id: "{{/id}}"}
    times: {at_least: 1}
    name: pong
on_connect:
  - type: welcome
"#,
        "yaml",
    );
    let fake = Fake::spawn(&["--scenario", path.to_str().unwrap()]).await;
    assert_it_greets_and_answers_a_ping(&fake).await;
}

#[tokio::test]
async fn an_invalid_yaml_scenario_exits_2_and_says_where() {
    let path = temp_file_ending("rules:\n  - match: any\n    replies: []\n", "yml");
    let stderr = refused_at_start(&["--scenario", path.to_str().unwrap()]).await;
    assert!(stderr.contains("unknown field `replies`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let mut fake = Fake::spawn(&[]).await;
    let _client = fake.connect().await;
    let pid = fake.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, fake.child.wait())
        .await
        .expect("it stops in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_port_in_use_exits_1_and_says_which() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = tokio::process::Command::new(BINARY)
        .args(["--port", &port])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn lenient_lets_unlooked_at_messages_pass_verify() {
    let fake = Fake::spawn(&["--lenient"]).await;
    let mut client = fake.connect().await;
    send_json(&mut client, json!({"type": "chatter"})).await;
    let (status, body) = fake
        .post("/connections/0/wait-frames?count=1", json!(null))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.ok("/verify").await, json!({"problems": []}));
}

/// This repository's Payments link contract, written from Orders' (the client's) side.
fn payments_contract() -> String {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/asyncapi.yaml");
    docs.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_asyncapi_document_makes_a_malformed_message_a_problem() {
    let contract = payments_contract();
    let args = [
        "--path",
        "/ws",
        "--asyncapi",
        &contract,
        "--asyncapi-describes",
        "client",
    ];
    let fake = Fake::spawn(&args).await;
    let mut client = fake.connect().await;
    fake.ok("/connections/next?timeout_ms=5000").await;
    send_json(&mut client, json!({"type": "ack", "event_id": 42})).await;
    send_json(&mut client, json!({"type": "ack"})).await;
    let (status, body) = fake
        .post(
            "/connections/0/expect",
            json!({"match": {"json_includes": {"type": "ack", "event_id": 42}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    fake.post("/connections/0/wait-frames?count=2", json!(null))
        .await;

    let problems = fake.ok("/verify").await["problems"].clone();
    let problems = problems.as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().unwrap();
    assert!(problem.contains("contract violation"), "{problem}");
    assert!(
        problem.contains(r#""event_id" is a required property"#),
        "{problem}"
    );
}

#[tokio::test]
async fn an_asyncapi_document_it_cannot_take_exits_2() {
    let path = temp_file("asyncapi: 2.6.0\nchannels: {}\n");
    let stderr = refused_at_start(&["--asyncapi", path.to_str().unwrap()]).await;
    assert!(stderr.contains("this fake reads AsyncAPI 3"), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}
