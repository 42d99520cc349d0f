//! `FakePayments`: the fake Payments service, a thin preset of [`FakeServer`] for
//! `shared-protocol`'s messages, with the auto-replies of the happy path.
//!
//! By default it answers like the real Payments does: `initiate_payment` →
//! `payment_methods`, `select_payment_method` → `payment_page`, `cancel_payment` → a
//! `CANCEL` `payment_state` (reason `orders_cancelled`), and records acks. Outcomes
//! are the test's to push: `fake.fulfill(&conn, order_id)`,
//! `fake.cancel(&conn, order_id, reason)`.
//! `FakePayments::builder().manual()` turns the auto-replies off.

use std::collections::HashMap;
use std::ops::Deref;
use std::panic::Location;
use std::sync::atomic::{AtomicI64, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use shared_protocol::{
    CancelReason, ClientMessage, EventId, MAX_MESSAGE_BYTES, OrderId, PaymentId, PaymentOutcome,
    SUBPROTOCOL, ServerMessage,
};

use shared_protocol::Message as _;

use fake_ws_server::{
    Codec, Connection, FakeServer, FakeServerBuilder, Matcher, Payload, Rule, SendError,
};

/// The Payments protocol on the wire: JSON text frames, decoded and checked by
/// `shared_protocol::decode` (size limit, known `type`), encoded by `shared_protocol::encode`.
struct PaymentsCodec;

impl Codec<ClientMessage, ServerMessage> for PaymentsCodec {
    fn decode(&self, payload: &Payload) -> Result<ClientMessage, String> {
        match payload {
            Payload::Text(text) => shared_protocol::decode(text).map_err(|e| e.to_string()),
            Payload::Binary(_) => Err("a binary frame; the protocol is text only".into()),
        }
    }

    fn encode(&self, message: &ServerMessage) -> Result<Payload, String> {
        Ok(Payload::Text(shared_protocol::encode(message)))
    }
}

/// The methods the fake offers, in order.
pub const METHODS: [&str; 3] = ["credit_card", "paypal", "bank_transfer"];

/// What the fake remembers across connections and restarts: payment ids per order,
/// and the event counter.
#[derive(Default)]
struct PaymentsState {
    port: AtomicU16,
    next_event: AtomicI64,
    payments: Mutex<HashMap<OrderId, PaymentId>>,
}

impl PaymentsState {
    fn payment_id(&self, order_id: OrderId) -> PaymentId {
        *self
            .payments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(order_id)
            .or_default()
    }

    fn event(
        &self,
        order_id: OrderId,
        state: PaymentOutcome,
        reason: Option<CancelReason>,
    ) -> ServerMessage {
        ServerMessage::PaymentState {
            event_id: EventId(self.next_event.fetch_add(1, Ordering::SeqCst) + 1),
            order_id,
            payment_id: self.payment_id(order_id),
            state,
            reason,
        }
    }

    fn page(&self, order_id: OrderId) -> ServerMessage {
        let payment_id = self.payment_id(order_id);
        ServerMessage::PaymentPage {
            order_id,
            payment_id,
            url: format!(
                "http://127.0.0.1:{}/pay/{payment_id}",
                self.port.load(Ordering::SeqCst)
            ),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
        }
    }
}

/// Configures a [`FakePayments`].
///
/// `on`, `expect`, `delay`, `rule`, `lenient` and `small_socket_buffers` repeat
/// [`fake_ws_server::FakeServerBuilder`]'s on purpose: TEST-HARNESS.md, the contract
/// tests outside this repository are written against, names `.on(…)` and `expect(n)` on
/// this builder. Each only builds a `Rule` or sets a flag; the logic is fake-ws-server's.
#[must_use]
pub struct FakePaymentsBuilder {
    manual: bool,
    lenient: bool,
    small_buffers: bool,
    tls: bool,
    rules: Vec<Rule<ClientMessage, ServerMessage>>,
}

impl FakePaymentsBuilder {
    /// No automatic replies: the test scripts every answer.
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }

    /// Messages the test never looked at do not fail it.
    pub fn lenient(mut self) -> Self {
        self.lenient = true;
        self
    }

    /// `wss://`, with a certificate for `127.0.0.1` signed by a root of this fake's
    /// own: see [`FakeServerBuilder::tls`] (the root: `root_certificate_pem`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Small TCP buffers, so a client blocks soon on a connection that stopped reading:
    /// see [`FakeServerBuilder::small_socket_buffers`].
    pub fn small_socket_buffers(mut self) -> Self {
        self.small_buffers = true;
        self
    }

    /// A custom reply, checked before the default ones.
    #[track_caller]
    pub fn on(
        self,
        matcher: Matcher<ClientMessage>,
        reply: impl Fn(&ClientMessage) -> Vec<ServerMessage> + Send + Sync + 'static,
    ) -> Self {
        let rule = Rule::when(matcher, reply);
        self.rule(rule)
    }

    /// The rule mounted last (by `on` or `rule`) must fire `times` times (a count or a
    /// range, see [`Rule::times`]), checked when the fake is dropped.
    #[track_caller]
    pub fn expect(mut self, times: impl Into<fake_ws_server::Times>) -> Self {
        let rule = self.last_rule();
        self.rules.push(rule.times(times));
        self
    }

    /// The rule mounted last (by `on` or `rule`) answers after `delay`.
    #[track_caller]
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        let rule = self.last_rule();
        self.rules.push(rule.delay(delay));
        self
    }

    #[track_caller]
    fn last_rule(&mut self) -> Rule<ClientMessage, ServerMessage> {
        self.rules
            .pop()
            .expect("expect/delay apply to the rule mounted just before: mount one with `on` first")
    }

    /// A custom rule (with `delay` or `expect`), checked before the default ones.
    pub fn rule(mut self, rule: Rule<ClientMessage, ServerMessage>) -> Self {
        self.rules.push(rule);
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    #[track_caller]
    pub fn start(self) -> impl std::future::Future<Output = FakePayments> + Send {
        let location = Location::caller();
        async move {
            let state = Arc::new(PaymentsState::default());
            let mut builder: FakeServerBuilder<ClientMessage, ServerMessage> =
                FakeServer::builder()
                    .subprotocol(SUBPROTOCOL)
                    .codec(PaymentsCodec);
            for rule in self.rules {
                builder = builder.rule(rule);
            }
            if !self.manual {
                builder = builder.rule(Rule::when(
                    Matcher::new("any initiate_payment", |m| {
                        matches!(m, ClientMessage::InitiatePayment { .. })
                    }),
                    |m| {
                        vec![ServerMessage::PaymentMethods {
                            order_id: m.order_id().expect("initiate names an order"),
                            methods: METHODS.iter().map(|m| m.to_string()).collect(),
                        }]
                    },
                ));
                let s = state.clone();
                builder = builder.rule(Rule::when(
                    Matcher::new("any select_payment_method", |m| {
                        matches!(m, ClientMessage::SelectPaymentMethod { .. })
                    }),
                    move |m| vec![s.page(m.order_id().expect("select names an order"))],
                ));
                let s = state.clone();
                builder = builder.rule(Rule::when(
                    Matcher::new("any cancel_payment", |m| {
                        matches!(m, ClientMessage::CancelPayment { .. })
                    }),
                    move |m| {
                        vec![s.event(
                            m.order_id().expect("cancel names an order"),
                            PaymentOutcome::Cancel,
                            Some(CancelReason::OrdersCancelled),
                        )]
                    },
                ));
                builder = builder.rule(Rule::when(ack(), |_| Vec::new()));
            }
            if self.lenient {
                builder = builder.lenient();
            }
            if self.small_buffers {
                builder = builder.small_socket_buffers();
            }
            if self.tls {
                builder = builder.tls();
            }
            let server = builder.start_at(location).await;
            state.port.store(server.port(), Ordering::SeqCst);
            FakePayments { server, state }
        }
    }
}

/// The fake Payments service: a [`FakeServer`] of `shared-protocol`'s messages, which
/// it derefs to for everything generic (`url`, `next_connection`, `stop`, ...). It only
/// adds what is Payments': outcomes with fresh event ids, stable payment ids. Its
/// connections are plain [`Connection`]s; the outcomes to push on one take it:
/// `fake.fulfill(&conn, order_id)`.
pub struct FakePayments {
    server: FakeServer<ClientMessage, ServerMessage>,
    state: Arc<PaymentsState>,
}

impl FakePayments {
    /// Starts with the default auto-replies.
    #[track_caller]
    pub fn start() -> impl std::future::Future<Output = FakePayments> + Send {
        Self::builder().start()
    }

    /// A builder: auto-replies on, strict, normal socket buffers, no custom rule.
    pub fn builder() -> FakePaymentsBuilder {
        FakePaymentsBuilder {
            manual: false,
            lenient: false,
            small_buffers: false,
            tls: false,
            rules: Vec::new(),
        }
    }

    /// A `payment_state` with a fresh event id, not sent: send it (even twice) yourself.
    pub fn payment_state(
        &self,
        order_id: OrderId,
        state: PaymentOutcome,
        reason: Option<CancelReason>,
    ) -> ServerMessage {
        self.state.event(order_id, state, reason)
    }

    /// The payment id the fake uses for an order.
    pub fn payment_id(&self, order_id: OrderId) -> PaymentId {
        self.state.payment_id(order_id)
    }

    /// The generic server itself, to own it (e.g. for [`FakeServer::shutdown`]).
    pub fn into_server(self) -> FakeServer<ClientMessage, ServerMessage> {
        self.server
    }

    /// Sends a `FULFILL` `payment_state` for the order on `conn`; returns its event id,
    /// or why it could not be sent.
    pub async fn fulfill(
        &self,
        conn: &Connection<ClientMessage, ServerMessage>,
        order_id: OrderId,
    ) -> Result<EventId, SendError> {
        self.outcome(conn, order_id, PaymentOutcome::Fulfill, None)
            .await
    }

    /// Sends a `CANCEL` `payment_state` with `reason` on `conn`; returns its event id,
    /// or why it could not be sent.
    pub async fn cancel(
        &self,
        conn: &Connection<ClientMessage, ServerMessage>,
        order_id: OrderId,
        reason: CancelReason,
    ) -> Result<EventId, SendError> {
        self.outcome(conn, order_id, PaymentOutcome::Cancel, Some(reason))
            .await
    }

    /// Sends on `conn` a text frame one byte over [`MAX_MESSAGE_BYTES`] (a JSON object
    /// padded with an unknown field), which the client must refuse with close code 1009.
    pub async fn send_oversize(
        &self,
        conn: &Connection<ClientMessage, ServerMessage>,
    ) -> Result<(), SendError> {
        const PREFIX: &str =
            r#"{"type":"error","order_id":null,"code":"internal","message":"","padding":""#;
        const SUFFIX: &str = r#""}"#;
        let padding = "x".repeat(MAX_MESSAGE_BYTES + 1 - PREFIX.len() - SUFFIX.len());
        let text = format!("{PREFIX}{padding}{SUFFIX}");
        debug_assert_eq!(text.len(), MAX_MESSAGE_BYTES + 1);
        conn.send_text(text).await
    }

    async fn outcome(
        &self,
        conn: &Connection<ClientMessage, ServerMessage>,
        order_id: OrderId,
        state: PaymentOutcome,
        reason: Option<CancelReason>,
    ) -> Result<EventId, SendError> {
        let message = self.state.event(order_id, state, reason);
        let ServerMessage::PaymentState { event_id, .. } = message else {
            unreachable!("event() builds a payment_state")
        };
        conn.send(message).await?;
        Ok(event_id)
    }
}

impl Deref for FakePayments {
    type Target = FakeServer<ClientMessage, ServerMessage>;
    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

/// `initiate_payment` for this order.
pub fn initiate_payment(order_id: OrderId) -> Matcher<ClientMessage> {
    Matcher::new(
        format!("initiate_payment for {order_id}"),
        move |m| matches!(m, ClientMessage::InitiatePayment { order_id: id, .. } if *id == order_id),
    )
}

/// `select_payment_method` of `method` for this order.
pub fn select_payment_method(order_id: OrderId, method: &str) -> Matcher<ClientMessage> {
    let method = method.to_owned();
    Matcher::new(
        format!("select_payment_method {method:?} for {order_id}"),
        move |m| matches!(m, ClientMessage::SelectPaymentMethod { order_id: id, method: chosen } if *id == order_id && *chosen == method),
    )
}

/// `cancel_payment` for this order.
pub fn cancel_payment(order_id: OrderId) -> Matcher<ClientMessage> {
    Matcher::new(
        format!("cancel_payment for {order_id}"),
        move |m| matches!(m, ClientMessage::CancelPayment { order_id: id } if *id == order_id),
    )
}

/// Any `ack`.
pub fn ack() -> Matcher<ClientMessage> {
    Matcher::new("any ack", |m| matches!(m, ClientMessage::Ack { .. }))
}

/// The `ack` of this event.
pub fn ack_of(event_id: EventId) -> Matcher<ClientMessage> {
    Matcher::new(
        format!("ack of event {event_id}"),
        move |m| matches!(m, ClientMessage::Ack { event_id: id } if *id == event_id),
    )
}
