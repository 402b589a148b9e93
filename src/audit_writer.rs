//! The audit log's writer: requests append their finished audit line to one shared buffer and
//! a writer thread puts the buffer on stdout in batches (issue 16: first the synchronous write
//! to stdout under stdout's lock, then a queue that woke the writer thread once per line, were
//! on every request's path and in its latency tail; on 2 CPUs a wake-up per request is a
//! context switch per request).
//!
//! How a line travels: the request formats its line (`audit.rs`), takes the buffer's lock
//! (held for a copy of a few hundred bytes) and appends it. Only the line that makes an empty
//! buffer non-empty while the writer sleeps wakes it; the writer then lingers [`LINGER`] so
//! the lines of that interval leave in one `write`, swaps the buffer for an empty one and
//! writes it outside the lock. Under load that is at most one wake-up and one `write` per
//! [`LINGER`], whatever the request rate; when idle, the writer sleeps without a timer.
//!
//! Guarantees, because the audit log is a record, not a best-effort diagnostic:
//! - **order**: one buffer, appended under its lock, written in order by one writer;
//! - **nothing dropped**: the buffer is bounded ([`MAX_BYTES`]); when it is full (stdout
//!   blocked, e.g. a stalled log shipper) a request waits for room (back-pressure) rather than
//!   lose a line; when the writer thread is gone (after shutdown, or it failed to start) the
//!   line is written synchronously instead;
//! - **on stdout soon**: within [`LINGER`] of the line (plus the write itself);
//! - **flushed on shutdown**: [`FlushGuard`] (held by `main` for the life of the process) asks
//!   the writer to write everything, waits until it has, and stops it.
//!
//! A write error on stdout (a closed pipe) cannot be reported anywhere but stderr; it is, once.
//! Before [`start`] (library tests, commands without a server) there is no audit log: lines
//! are discarded, as they were when the audit log was a `tracing` layer not yet installed.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer collects lines after the first one before it writes them.
pub const LINGER: Duration = Duration::from_millis(5);

/// Bytes the buffer holds before a request waits for the writer (~40 000 lines).
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The sink lines go to once [`start`] ran.
static SINK: OnceLock<Arc<Shared>> = OnceLock::new();

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, a flush request or the stop.
    work: Condvar,
    /// Requests wait here for room; [`FlushGuard`] waits here for its flush.
    done: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer waits for a first line (a sender must wake it).
    idle: bool,
    /// The writer thread runs (otherwise lines are written synchronously).
    running: bool,
    /// Flush requests made and completed (a flush waits until `flushed` reaches its number).
    flush_asked: u64,
    flushed: u64,
    stop: bool,
}

/// Flushes and stops the audit writer when dropped (at the end of `main`).
#[must_use = "dropping the guard flushes and stops the audit writer"]
pub struct FlushGuard {
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread and makes [`write_line`] use it. Without a thread (the spawn
/// failed) lines are written synchronously: slower, never lost. A second call returns an
/// inert guard (the first writer stays).
pub fn start() -> FlushGuard {
    start_with(std::io::stdout, &SINK)
}

fn start_with<W: Write + 'static>(
    out: impl FnOnce() -> W + Send + 'static,
    sink: &OnceLock<Arc<Shared>>,
) -> FlushGuard {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
        done: Condvar::new(),
    });
    if sink.set(shared.clone()).is_err() {
        return FlushGuard {
            shared: None,
            thread: None,
        };
    }
    shared.state.lock().running = true;
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || run(&s, out()))
        .ok();
    if thread.is_none() {
        shared.state.lock().running = false;
    }
    FlushGuard {
        shared: Some(shared),
        thread,
    }
}

/// Hands one complete line (ending in `\n`) to the audit log.
pub fn write_line(line: &[u8]) {
    if let Some(shared) = SINK.get() {
        shared.append(line);
    }
}

impl Shared {
    fn append(&self, line: &[u8]) {
        let mut st = self.state.lock();
        if !st.running {
            // The writer stopped (shutdown) or never started: write now, under the lock, so
            // the order is kept.
            write_direct(line);
            return;
        }
        while st.buf.len() >= MAX_BYTES && st.running {
            self.done.wait(&mut st);
        }
        if !st.running {
            write_direct(line);
            return;
        }
        st.buf.extend_from_slice(line);
        let wake = st.idle;
        st.idle = false;
        drop(st);
        if wake {
            self.work.notify_one();
        }
    }
}

/// The writer thread's loop: sleep until a line arrives, linger, write the batch.
fn run(shared: &Shared, out: impl Write) {
    let mut out = out;
    let mut failed = false;
    let mut spare: Vec<u8> = Vec::new();
    let mut st = shared.state.lock();
    loop {
        while st.buf.is_empty() && !st.stop && st.flush_asked == st.flushed {
            st.idle = true;
            shared.work.wait(&mut st);
        }
        st.idle = false;
        if !st.stop && st.flush_asked == st.flushed {
            // Collect the lines of the next few milliseconds into the same write. A flush
            // request or the stop ends the wait early (they notify `work`).
            shared.work.wait_for(&mut st, LINGER);
        }
        let flush_target = st.flush_asked;
        let stop = st.stop;
        std::mem::swap(&mut st.buf, &mut spare);
        drop(st);
        if !spare.is_empty()
            && let Err(e) = out.write_all(&spare).and_then(|()| out.flush())
            && !failed
        {
            failed = true;
            eprintln!("token-broker: the audit log cannot be written to stdout: {e}");
        }
        // Keep the capacity for the next batch unless a burst made it large.
        spare.clear();
        if spare.capacity() > 1024 * 1024 {
            spare = Vec::new();
        }
        st = shared.state.lock();
        st.flushed = flush_target;
        shared.done.notify_all();
        if stop && st.buf.is_empty() {
            st.running = false;
            drop(st);
            shared.done.notify_all();
            return;
        }
    }
}

fn write_direct(line: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line);
    let _ = out.flush();
}

impl FlushGuard {
    /// Writes everything handed over so far (and stops the writer when `stop`).
    fn flush(&mut self, stop: bool) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut st = shared.state.lock();
        if !st.running {
            return;
        }
        st.flush_asked += 1;
        st.stop |= stop;
        let mine = st.flush_asked;
        shared.work.notify_one();
        while st.running && st.flushed < mine {
            shared.done.wait(&mut st);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.flush(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(shared) = &self.shared {
            // Whatever the thread did, later lines are written directly.
            shared.state.lock().running = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records what the writer wrote and how many `write_all` batches it took.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>, Arc<AtomicUsize>);

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.write(b).map(|_| ())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_in_batches_and_a_flush_waits_for_them() {
        let sink = OnceLock::new();
        let out = Out::default();
        let o = out.clone();
        let mut guard = start_with(move || o, &sink);
        let shared = sink.get().unwrap().clone();
        // Two threads append concurrently; each thread's lines keep their order.
        let senders: Vec<_> = (0..2)
            .map(|t| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        s.append(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        guard.flush(false);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 10_000, "nothing dropped");
        for t in 0..2 {
            let mine: Vec<u32> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5000).collect::<Vec<_>>(), "order of thread {t}");
        }
        // Batched: far fewer writes than lines (one per wake-up and linger).
        let writes = out.1.load(Ordering::Relaxed);
        assert!(writes < 1000, "{writes} writes for 10 000 lines");
        // Stopping writes what is left; afterwards a line is written directly, not queued.
        shared.append(b"last\n");
        drop(guard);
        assert!(String::from_utf8_lossy(&out.0.lock()).ends_with("last\n"));
        assert!(!shared.state.lock().running);
    }

    #[test]
    fn a_full_buffer_makes_the_sender_wait_not_drop() {
        let sink = OnceLock::new();
        // A stdout that blocks until released: the buffer fills up.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        struct Blocked(Arc<(Mutex<bool>, Condvar)>, Out);
        impl Write for Blocked {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let mut open = m.lock();
                while !*open {
                    c.wait(&mut open);
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Out::default();
        let (g, o) = (gate.clone(), out.clone());
        let guard = start_with(move || Blocked(g, o), &sink);
        let shared = sink.get().unwrap().clone();
        let line = vec![b'x'; 1024 * 1024 - 1]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // The first line is taken by the writer, whose write then blocks.
        shared.append(b"first\n");
        std::thread::sleep(Duration::from_millis(100));
        let s = shared.clone();
        let l = line.clone();
        // 16 MiB fill the buffer, then the sender must wait.
        let sender = std::thread::spawn(move || {
            for _ in 0..20 {
                s.append(&l);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let waiting = !sender.is_finished();
        let held = shared.state.lock().buf.len();
        // Release stdout before asserting: a failed assertion must not leave the writer blocked.
        let (m, c) = &*gate;
        *m.lock() = true;
        c.notify_all();
        assert!(waiting, "the sender waits for room");
        assert!(held >= MAX_BYTES, "{held} bytes held");
        sender.join().unwrap();
        drop(guard);
        assert_eq!(out.0.lock().len(), 6 + 20 * line.len(), "nothing dropped");
    }
}
