//! Log lines captured in memory, for tests that read what a service logged:
//!
//! ```ignore
//! let logs = CapturedLogs::default();
//! let writer = logs.clone();
//! tracing_subscriber::fmt().with_writer(move || writer.clone()).init();
//! // ...
//! assert!(logs.text().contains("connected to Payments"));
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A `Write` that keeps everything written to it; clones share the buffer.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer()).into_owned()
    }

    /// The buffer, even if a writer panicked while holding it.
    fn buffer(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
