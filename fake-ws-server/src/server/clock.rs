//! The clock attempts and transcripts are stamped with: the tokio clock of the runtime
//! that started the server (the test's), read from the server's own thread.
//!
//! The server runs on a runtime of its own, whose clock is never paused. A test on a
//! paused runtime (`#[tokio::test(start_paused = true)]`, `tokio::time::pause`) moves
//! its own clock only, so the server keeps the handle of the runtime `start()` was
//! awaited on and, to stamp a time, enters it for the length of one
//! `tokio::time::Instant::now()`: the time the test itself would read at that moment.

use tokio::runtime::Handle;
use tokio::time::Instant;

/// The test's clock: `now()` as the runtime that started the server sees it.
#[derive(Debug, Clone)]
pub(super) struct Clock {
    /// The runtime `start()` was awaited on; `None` when it was polled outside one
    /// (a plain executor), and times come from the real clock.
    test: Option<Handle>,
}

impl Clock {
    /// The clock of the runtime the caller runs on.
    pub(super) fn of_caller() -> Self {
        Clock {
            test: Handle::try_current().ok(),
        }
    }

    /// The test's time now: virtual when the test paused its clock, real otherwise.
    pub(super) fn now(&self) -> Instant {
        match &self.test {
            Some(handle) => {
                let _entered = handle.enter();
                Instant::now()
            }
            None => Instant::now(),
        }
    }
}
