//! The audit log's writer: audit lines leave the request's thread through a bounded queue and
//! one writer thread puts them on stdout through a buffer, flushed whenever the queue runs
//! empty (issue 16: the synchronous write to stdout, under stdout's lock, was on every
//! request's path and in its latency tail).
//!
//! Guarantees, because the audit log is a record, not a best-effort diagnostic:
//! - **order**: one queue, one writer: lines appear in the order they were handed over;
//! - **nothing dropped**: the queue is bounded ([`QUEUE_LINES`]); when it is full the request
//!   waits for room (back-pressure) rather than lose a line; if the writer thread is gone (after
//!   shutdown, or it failed to start), a line is written synchronously instead;
//! - **flushed on shutdown**: [`FlushGuard`] (held by `main` for the life of the process)
//!   hands over a flush request on drop and waits until everything before it is on stdout.
//!
//! A write error on stdout (a closed pipe) cannot be reported anywhere but stderr; it is, once.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// Lines the queue holds before a request waits for the writer.
pub const QUEUE_LINES: usize = 65_536;

enum Msg {
    Line(Vec<u8>),
    /// Flush everything so far, then acknowledge (and stop when `stop`).
    Flush {
        ack: SyncSender<()>,
        stop: bool,
    },
}

/// The sending side, shared by every `tracing` writer the audit layer makes.
#[derive(Clone)]
pub struct AuditWriter {
    tx: Arc<OnceLock<SyncSender<Msg>>>,
}

/// Flushes the audit queue when dropped (at the end of `main`).
#[must_use = "dropping the guard flushes and stops the audit writer"]
pub struct FlushGuard {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the writer thread. Without a thread (the spawn failed) lines are written
    /// synchronously: slower, never lost.
    pub fn start() -> (AuditWriter, FlushGuard) {
        let (tx, rx) = sync_channel::<Msg>(QUEUE_LINES);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(&rx, std::io::stdout()))
            .ok();
        let cell = OnceLock::new();
        if thread.is_some() {
            let _ = cell.set(tx.clone());
        }
        (
            AuditWriter { tx: Arc::new(cell) },
            FlushGuard {
                tx: thread.as_ref().map(|_| tx),
                thread,
            },
        )
    }

    fn send(&self, line: Vec<u8>) {
        let Some(tx) = self.tx.get() else {
            write_direct(&line);
            return;
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            // Full: wait for room rather than drop the line.
            Err(TrySendError::Full(m)) => {
                if let Err(e) = tx.send(m) {
                    write_lost(e.0);
                }
            }
            Err(TrySendError::Disconnected(m)) => write_lost(m),
        }
    }
}

/// The writer thread's loop: write what arrives, flush when the queue is empty.
fn run(rx: &Receiver<Msg>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failed = false;
    let fail = |e: std::io::Error, failed: &mut bool| {
        if !*failed {
            *failed = true;
            eprintln!("token-broker: the audit log cannot be written to stdout: {e}");
        }
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    if let Err(e) = out.write_all(&l) {
                        fail(e, &mut failed);
                    }
                }
                Msg::Flush { ack, stop } => {
                    if let Err(e) = out.flush() {
                        fail(e, &mut failed);
                    }
                    let _ = ack.send(());
                    if stop {
                        return;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            fail(e, &mut failed);
        }
    }
}

fn write_direct(line: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line);
    let _ = out.flush();
}

/// The writer stopped (shutdown): the line is written synchronously.
fn write_lost(m: Msg) {
    if let Msg::Line(l) = m {
        write_direct(&l);
    }
}

impl FlushGuard {
    fn flush(&mut self, stop: bool) {
        let Some(tx) = &self.tx else {
            return;
        };
        let (ack, done) = sync_channel(1);
        if tx.send(Msg::Flush { ack, stop }).is_ok() {
            let _ = done.recv();
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.flush(true);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's writer for `tracing-subscriber` (the fmt layer formats a whole line, then
/// writes it with one `write_all`).
pub struct LineWriter {
    sink: AuditWriter,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.send(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AuditWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            sink: self.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_a_flush_waits_for_them() {
        let out = Shared::default();
        let (tx, rx) = sync_channel::<Msg>(4);
        let sink = out.clone();
        let t = std::thread::spawn(move || run(&rx, sink));
        let w = AuditWriter {
            tx: Arc::new(OnceLock::new()),
        };
        let _ = w.tx.set(tx.clone());
        // More lines than the queue holds: senders wait, nothing is dropped.
        for i in 0..100 {
            let mut lw = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            writeln!(lw, "line {i}").unwrap();
        }
        let mut guard = FlushGuard {
            tx: Some(tx),
            thread: Some(t),
        };
        guard.flush(false);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        drop(guard);
        // After the writer stopped, a line is written directly (stdout here), not lost: the
        // send reports the closed queue instead of blocking forever.
        assert!(
            w.tx.get()
                .unwrap()
                .try_send(Msg::Line(b"x".to_vec()))
                .is_err()
        );
    }
}
