//! The task of one accepted connection: one `select!` loop over the socket's frames,
//! the [`Command`]s of the test and its own pings. It writes what the commands ask and
//! records it in the shared state (`state`); what the client sends goes to `frames`,
//! which records and decodes it and fires the mounted rules (`rules`); then it wakes
//! the waiters. A [`Connection`](super::Connection) handle drives it only through the
//! [`Command`] channel, whose sender the shared state keeps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

use super::closed::{Closed, SendError};
use super::command::Command;
use super::faults::write_fault;
use super::frames::{fragmented_entry, fragments, frame_kind, on_close, on_frame, on_oversize};
use super::link::Link;
use super::pongs::PongFilter;
use super::state::Shared;
use super::stream::Stream;
use crate::codec::Payload;
use crate::transcript::Direction;

/// What a connection's WebSocket runs over: its stream, through its impairable link,
/// under the filter that lets a stalled connection answer no ping.
pub(super) type Filtered = PongFilter<Link<Stream>>;

/// The task of connection `id`: its WebSocket, and what the test told it to do.
struct Task<In, Out> {
    shared: Arc<Shared<In, Out>>,
    id: usize,
    ws: WebSocketStream<Filtered>,
    /// The sender of its own commands, which the rules it fires send their steps through.
    commands: mpsc::UnboundedSender<Command>,
    /// Whether it reads the socket ([`Command::Read`]).
    reading: bool,
    /// Its own pings ([`Command::PingEvery`]).
    pings: Option<Interval>,
}

/// What the task does after a step of its loop.
enum Next {
    Continue,
    /// The connection is gone: the task ends.
    End,
    /// The test asked for a reset: the task resets the socket, answers, and ends.
    Abort(oneshot::Sender<()>),
}

pub(super) async fn run_connection<In, Out>(
    shared: Arc<Shared<In, Out>>,
    id: usize,
    ws: WebSocketStream<Filtered>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    commands_tx: mpsc::UnboundedSender<Command>,
) where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    let mut task = Task {
        shared,
        id,
        ws,
        commands: commands_tx,
        reading: true,
        pings: None,
    };
    loop {
        // The branches borrow these fields apart; the handler that runs takes the whole
        // task once they are dropped.
        let Task {
            ws, pings, reading, ..
        } = &mut task;
        let next = tokio::select! {
            // Commands first: one the test sent before the client wrote a frame takes
            // effect before that frame is read (`stop_answering_pings` relies on it).
            biased;
            command = commands.recv() => match command {
                Some(command) => task.on_command(command).await,
                None => Next::End,
            },
            _ = async { pings.as_mut().expect("guarded").tick().await }, if pings.is_some() => {
                task.ping_tick().await
            }
            frame = next_frame(ws, *reading) => task.on_read(frame).await,
        };
        match next {
            Next::Continue => {}
            Next::End => {
                // What an impaired link still holds (the answer to a close) goes on.
                let within = task.shared.config.deadline;
                task.ws.get_mut().inner_mut().finish(within).await;
                return;
            }
            Next::Abort(done) => {
                task.abort(done);
                return;
            }
        }
    }
}

/// The next frame from the client while the task reads; while it does not, it lets
/// out what an impaired link holds (`link`), and never yields.
async fn next_frame(
    ws: &mut WebSocketStream<Filtered>,
    reading: bool,
) -> Option<Result<Message, Error>> {
    if reading {
        return ws.next().await;
    }
    let link = ws.get_mut().inner_mut();
    let _ = std::future::poll_fn(|cx| link.poll_drain(cx)).await;
    std::future::pending().await
}

impl<In, Out> Task<In, Out>
where
    In: fmt::Debug + Clone + Send + 'static,
    Out: Send + 'static,
{
    /// Carries out a command of the test, or of a rule's response.
    async fn on_command(&mut self, command: Command) -> Next {
        match command {
            Command::Send(message, done) => self.write_for(message, done).await,
            Command::Close(code, reason, done) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                self.write_for(Message::Close(Some(frame)), done).await
            }
            Command::Abort(done) => Next::Abort(done),
            Command::Read(read, done) => {
                self.reading = read;
                if read {
                    self.ws.get_mut().stall(false);
                }
                let _ = done.send(());
                Next::Continue
            }
            Command::Stall(stall, done) => {
                self.ws.get_mut().stall(stall);
                let _ = done.send(());
                Next::Continue
            }
            Command::Ping(payload, done) => self.ping(payload, done).await,
            Command::Fragmented(payload, size, done) => {
                self.write_fragmented(payload, size, done).await
            }
            Command::Fault(fault, done) => {
                let (written, ended) =
                    write_fault(&self.shared, self.id, &mut self.ws, fault).await;
                let _ = done.send(written);
                if ended { Next::End } else { Next::Continue }
            }
            Command::PingEvery(every, done) => {
                self.pings = every.map(|every| {
                    let mut pings = tokio::time::interval_at(Instant::now() + every, every);
                    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    pings
                });
                let _ = done.send(());
                Next::Continue
            }
        }
    }

    /// Writes a frame the test asked for, and answers whether it was written.
    async fn write_for(
        &mut self,
        message: Message,
        done: oneshot::Sender<Result<(), SendError>>,
    ) -> Next {
        let written = self.write(message).await;
        let gone = written == Err(SendError::Closed(Closed::Dropped));
        let _ = done.send(written);
        if gone { Next::End } else { Next::Continue }
    }

    /// Pings the client once, and answers with the ping's transcript entry.
    async fn ping(&mut self, payload: Vec<u8>, done: oneshot::Sender<usize>) -> Next {
        // Not written, no entry: `done` is dropped and the ping is not awaited.
        match self.write(Message::Ping(payload.into())).await {
            Ok(()) => {
                let entry = self.shared.lock().connections[self.id].transcript.len() - 1;
                let _ = done.send(entry);
                Next::Continue
            }
            Err(SendError::Closed(Closed::Dropped)) => Next::End,
            Err(_) => Next::Continue,
        }
    }

    /// Writes a message as fragments of at most `size` bytes, recorded once, whole.
    async fn write_fragmented(
        &mut self,
        payload: Payload,
        size: usize,
        done: oneshot::Sender<()>,
    ) -> Next {
        let (frame, note) = fragmented_entry(&payload, size);
        let mut written = Ok(());
        for fragment in fragments(payload, size) {
            written = self.write_unrecorded(fragment).await;
            if written.is_err() {
                break;
            }
        }
        if written.is_ok() {
            self.shared.lock().connections[self.id].record(Direction::ToClient, frame, Some(note));
        }
        let _ = done.send(());
        if written == Err(SendError::Closed(Closed::Dropped)) {
            Next::End
        } else {
            Next::Continue
        }
    }

    /// One of the task's own pings ([`Command::PingEvery`]).
    async fn ping_tick(&mut self) -> Next {
        let ping = Message::Ping(Vec::new().into());
        if self.write(ping).await == Err(SendError::Closed(Closed::Dropped)) {
            Next::End
        } else {
            Next::Continue
        }
    }

    /// What the socket yielded: a frame from the client, for `frames` to record and
    /// answer; one over the builder's limits, answered with a close 1009; or the end.
    async fn on_read(&mut self, frame: Option<Result<Message, Error>>) -> Next {
        let frame = match frame {
            Some(Err(Error::Capacity(error))) => {
                // The frame is half read: close with 1009 and end the connection.
                let close = on_oversize(&self.shared, self.id, &error);
                let _ = self.write_unrecorded(close).await;
                return Next::End;
            }
            None | Some(Err(_)) => {
                // A close frame tungstenite could not read (a 1-byte payload, say) is
                // still how the client ended it.
                if let Some(close) = self.ws.get_mut().take_close() {
                    on_close(&self.shared, self.id, &close);
                }
                return Next::End;
            }
            Some(Ok(frame)) => frame,
        };
        let closed = matches!(frame, Message::Close(_));
        // The close frame as it was on the wire, not as tungstenite changed it.
        let wire = closed.then(|| self.ws.get_mut().take_close()).flatten();
        on_frame(&self.shared, self.id, frame, wire, &self.commands);
        self.shared.notify.notify_waiters();
        if closed {
            // tungstenite answers the close; flush it, then the stream ends.
            let _ = self.ws.flush().await;
        }
        Next::Continue
    }
}

impl<In, Out> Task<In, Out> {
    /// Writes a frame and records it in the transcript once written (only then). A
    /// broken socket (the client is gone) is `Closed(Dropped)`, which ends the connection
    /// even while the fake is not reading (when a read would not tell); a frame after a
    /// close frame is refused by tungstenite and not sent.
    async fn write(&mut self, message: Message) -> Result<(), SendError> {
        let frame = frame_kind(&message);
        self.write_unrecorded(message).await?;
        self.shared.lock().connections[self.id].record(Direction::ToClient, frame, None);
        Ok(())
    }

    /// [`Task::write`] without the transcript entry: for the fragments of one message,
    /// which is recorded once, whole.
    async fn write_unrecorded(&mut self, message: Message) -> Result<(), SendError> {
        match self.ws.send(message).await {
            Ok(()) => Ok(()),
            Err(Error::Io(_)) => Err(SendError::Closed(Closed::Dropped)),
            Err(_) => Err(match &self.shared.lock().connections[self.id].closed {
                Some(closed) => SendError::Closed(closed.clone()),
                None => SendError::Closing,
            }),
        }
    }

    /// Resets the connection ([`Command::Abort`]): it ended by the fake's hand.
    fn abort(self, done: oneshot::Sender<()>) {
        reset(self.ws);
        let mut state = self.shared.lock();
        state.connections[self.id]
            .closed
            .get_or_insert(Closed::Aborted);
        drop(state);
        let _ = done.send(());
    }
}

/// Drops the TCP connection with a RST instead of a FIN: the abrupt end a crashed
/// peer produces.
pub(super) fn reset(ws: WebSocketStream<Filtered>) {
    let _ =
        socket2::SockRef::from(ws.get_ref().inner().inner().tcp()).set_linger(Some(Duration::ZERO));
    drop(ws);
}
