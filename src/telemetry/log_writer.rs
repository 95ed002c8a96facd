//! Log lines leave the process from a thread of their own, a buffer at a time.
//!
//! A slow or stuck reader of stderr (a full pipe, a stalled log shipper) must not stop the
//! runtime, which may be holding SQLite's write lock: events append to a shared buffer and
//! return; the thread writes. Compared with `tracing_appender::non_blocking`, which this
//! replaces, a line is one copy into that buffer instead of an allocation and a channel message,
//! the thread is woken by the first line into an empty buffer only, and it writes what gathered
//! with one `write` instead of one per line. At the API's pace the thread first waits `GATHER`
//! for company, so at 200 deletions a second it wakes twenty times a second, not two hundred.
//!
//! When the buffer is full (`CAPACITY`: the reader has been stuck for a while) lines are
//! dropped, counted, and the count is written after the next lines that get through. A kill -9
//! loses what the buffer holds: while stderr keeps up, at most `GATHER`'s worth of lines.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread lets lines gather after the first one before writing them.
const GATHER: Duration = Duration::from_millis(50);
/// Bytes the buffer holds at most; more are dropped (about 30,000 lines).
const CAPACITY: usize = 8 << 20;
/// How long closing the logs waits for the thread to write what is left.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the events and the thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: the first line into an empty buffer, or closing.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    closing: bool,
    /// Set by the thread once everything is written, for `close` to wait on.
    closed: bool,
}

/// The writer handed to the subscriber; cheap to clone, one per event.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keep it alive until exit: dropping it writes what is buffered (waiting at most `CLOSE_WAIT`).
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the thread that writes to `out`.
    pub fn spawn(out: impl Write + Send + 'static) -> (LogWriter, LogGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || write_lines(&shared, out)
            })
            .expect("failed to start the log-writer thread");
        let guard = LogGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        (LogWriter { shared }, guard)
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.lines.len() + line.len() > CAPACITY {
            state.dropped += 1;
        } else {
            let was_empty = state.lines.is_empty();
            state.lines.extend_from_slice(line);
            if was_empty {
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The thread: waits for a first line, lets company gather, writes it all; until closed.
fn write_lines(shared: &Shared, mut out: impl Write) {
    let mut writing = Vec::new();
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        while state.lines.is_empty() && !state.closing {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if !state.closing {
            // Closing cuts the wait short.
            state = shared
                .wake
                .wait_timeout_while(state, GATHER, |s| !s.closing)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut state.lines, &mut writing);
        let (closing, dropped) = (state.closing, std::mem::take(&mut state.dropped));
        drop(state);
        // A failing stderr has nobody to tell; the lines are gone either way.
        let _ = out.write_all(&writing);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "session-reaper: {dropped} log lines dropped: stderr was not read fast enough"
            );
        }
        let _ = out.flush();
        writing.clear();
        state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if closing && state.lines.is_empty() {
            state.closed = true;
            shared.wake.notify_all();
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closing = true;
        self.shared.wake.notify_all();
        // A stuck stderr must not hold the exit: wait a moment, then leave the thread to it.
        let (state, _) = self
            .shared
            .wake
            .wait_timeout_while(state, CLOSE_WAIT, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        let closed = state.closed;
        drop(state);
        if closed && let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read afterwards.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(sink.clone());
        for i in 0..1000 {
            writer.clone().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_full_buffer_drops_lines_and_says_how_many() {
        /// A reader that never reads until told to.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let _open = cv.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(Stuck(gate.clone(), sink.clone()));
        let line = vec![b'x'; 1 << 20];
        // The thread takes at most one buffer before it is stuck; eight lines fill the next one.
        for _ in 0..30 {
            writer.clone().write_all(&line).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let written = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
        assert!(written.contains("log lines dropped"), "no drop count written");
    }
}
