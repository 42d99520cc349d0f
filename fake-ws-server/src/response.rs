//! [`Response`]: what a rule answers with, a sequence of steps run in order.

use std::time::Duration;

/// What a [`Rule`](crate::Rule) answers a message with: steps run in order, on the
/// connection the message came on. Send typed messages, raw text or binary frames;
/// close with a code and reason; abort the TCP connection; stall; wait a delay.
///
/// A `Vec<Out>` converts into a response that sends each message in turn, so a reply
/// closure can return either.
///
/// ```
/// use std::time::Duration;
/// use fake_ws_server::Response;
///
/// // Answer, wait 100 ms, then say goodbye with a close frame.
/// let response: Response<String> = Response::new()
///     .send("welcome".to_owned())
///     .delay(Duration::from_millis(100))
///     .close(1000, "bye");
/// assert_eq!(response.len(), 3);
/// ```
#[must_use]
pub struct Response<Out> {
    pub(crate) steps: Vec<Step<Out>>,
}

/// One step of a [`Response`].
pub(crate) enum Step<Out> {
    Send(Out),
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
    Abort,
    Stall,
    Delay(Duration),
}

impl<Out> Response<Out> {
    /// An empty response: the message counts as handled, nothing is sent.
    pub fn new() -> Self {
        Response { steps: Vec::new() }
    }

    fn then(mut self, step: Step<Out>) -> Self {
        self.steps.push(step);
        self
    }

    /// Sends a typed message (encoded like [`Connection::send`](crate::Connection::send)).
    pub fn send(self, message: Out) -> Self {
        self.then(Step::Send(message))
    }

    /// Sends each message in turn.
    pub fn send_all(self, messages: impl IntoIterator<Item = Out>) -> Self {
        messages.into_iter().fold(self, Response::send)
    }

    /// Sends a raw text frame, which need not be a valid `Out`.
    pub fn text(self, text: impl Into<String>) -> Self {
        self.then(Step::Text(text.into()))
    }

    /// Sends a raw binary frame.
    pub fn binary(self, bytes: impl Into<Vec<u8>>) -> Self {
        self.then(Step::Binary(bytes.into()))
    }

    /// Sends a close frame with `code` and `reason` (like
    /// [`Connection::close`](crate::Connection::close)).
    pub fn close(self, code: u16, reason: impl Into<String>) -> Self {
        self.then(Step::Close(code, reason.into()))
    }

    /// Drops the TCP connection with a reset, no close frame (like
    /// [`Connection::abort`](crate::Connection::abort)). Later steps do nothing.
    pub fn abort(self) -> Self {
        self.then(Step::Abort)
    }

    /// Stops reading the connection, as
    /// [`Connection::stop_reading`](crate::Connection::stop_reading) does: the
    /// connection stays open, the fake reads and answers nothing (no rule, no pong)
    /// until the test calls [`Connection::resume_reading`](crate::Connection::resume_reading).
    pub fn stall(self) -> Self {
        self.then(Step::Stall)
    }

    /// Waits `delay` before the next step (the connection goes on meanwhile: other
    /// frames are read and answered).
    pub fn delay(self, delay: Duration) -> Self {
        self.then(Step::Delay(delay))
    }

    /// How many steps the response has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the response does nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl<Out> Default for Response<Out> {
    fn default() -> Self {
        Response::new()
    }
}

impl<Out> From<Vec<Out>> for Response<Out> {
    fn from(messages: Vec<Out>) -> Self {
        Response::new().send_all(messages)
    }
}
