//! The bounded read-ahead of a forwarded request body.
//!
//! A body is kept in memory only when it is small enough to replay (a 401 retry, RFC 6750
//! §3.1, or a retry after a connection error, RFC 9110 §9.2.2): the proxy reads ahead until the
//! body ends or passes `limit` bytes. Past the limit the chunks read so far and the rest of the
//! stream are forwarded as a stream, never collected. A declared `Content-Length` above the
//! limit skips the read-ahead altogether. So the proxy holds at most `limit` plus one chunk of
//! any body, whatever its size.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// A request body after the read-ahead.
pub enum Prebuffered<S> {
    /// The whole body, at most `limit` bytes: replayable.
    Complete(Bytes),
    /// Too large to keep: the chunks already read (to send first) and the unread rest.
    Streaming { head: Vec<Bytes>, rest: S },
}

/// Reads `stream` ahead up to `limit` bytes (see the module doc). `declared` is the request's
/// `Content-Length`, if any.
pub async fn prebuffer<S, E>(
    mut stream: S,
    limit: usize,
    declared: Option<u64>,
) -> Result<Prebuffered<S>, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(Prebuffered::Streaming {
            head: Vec::new(),
            rest: stream,
        });
    }
    let mut head: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size = size.saturating_add(chunk.len());
        head.push(chunk);
        if size > limit {
            return Ok(Prebuffered::Streaming { head, rest: stream });
        }
    }
    let mut all = Vec::with_capacity(size);
    for c in &head {
        all.extend_from_slice(c);
    }
    Ok(Prebuffered::Complete(Bytes::from(all)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A body of `n` chunks of `size` bytes that counts how many chunks were pulled.
    fn body(
        n: usize,
        size: usize,
        pulled: Arc<AtomicUsize>,
    ) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
        futures_util::stream::iter(0..n).map(move |_| {
            pulled.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from(vec![7u8; size]))
        })
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn small_bodies_are_kept_whole() {
        let pulled = Arc::new(AtomicUsize::new(0));
        match run(prebuffer(body(3, 100, pulled.clone()), 300, None)).unwrap() {
            Prebuffered::Complete(b) => assert_eq!(b.len(), 300),
            Prebuffered::Streaming { .. } => panic!("a body at the limit is replayable"),
        }
        match run(prebuffer(body(0, 1, pulled), 0, None)).unwrap() {
            Prebuffered::Complete(b) => assert!(b.is_empty()),
            Prebuffered::Streaming { .. } => panic!("an empty body is replayable"),
        }
    }

    #[test]
    fn large_bodies_are_read_no_further_than_the_limit_plus_one_chunk() {
        // 10 MB in 64 KiB chunks, limit 100 KiB: two chunks are read ahead, the rest is not
        // touched until it is forwarded.
        let pulled = Arc::new(AtomicUsize::new(0));
        let chunks = 10 * 1024 * 1024 / (64 * 1024);
        match run(prebuffer(
            body(chunks, 64 * 1024, pulled.clone()),
            100 * 1024,
            None,
        ))
        .unwrap()
        {
            Prebuffered::Streaming { head, rest } => {
                let held: usize = head.iter().map(Bytes::len).sum();
                assert!(held <= 100 * 1024 + 64 * 1024, "held {held}");
                assert_eq!(pulled.load(Ordering::SeqCst), 2);
                let remaining = run(rest.count());
                assert_eq!(remaining + head.len(), chunks);
            }
            Prebuffered::Complete(_) => panic!("a 10 MB body must stream"),
        }
    }

    #[test]
    fn a_declared_large_body_is_not_read_ahead() {
        let pulled = Arc::new(AtomicUsize::new(0));
        match run(prebuffer(body(4, 10, pulled.clone()), 16, Some(40))).unwrap() {
            Prebuffered::Streaming { head, .. } => {
                assert!(head.is_empty());
                assert_eq!(pulled.load(Ordering::SeqCst), 0);
            }
            Prebuffered::Complete(_) => panic!("declared size above the limit must stream"),
        }
    }
}
