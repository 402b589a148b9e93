//! A small Redis client: RESP2 over TCP or TLS (`rediss://`), `AUTH` with an ACL user, a
//! handful of idle connections reused, every command bounded by one timeout.
//!
//! Hand-rolled rather than the `redis` crate: the broker needs a few commands (GET/MGET, SET
//! with NX/PX, DEL, EVAL, PUBLISH, SUBSCRIBE) and a strict size bound on what it reads; the
//! client here is a few hundred lines on tokio and rustls, both already in the build.
//!
//! Failure model: a command that fails (connect, I/O, timeout, a malformed reply) drops its
//! connection; the next command connects again, so the client reconnects by itself. A Redis
//! error reply (`-ERR ...`) keeps the connection. Nothing here logs; the caller decides.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use url::Url;

use crate::config::SharedCacheConfig;

/// The largest bulk string read (a sealed token is a few KiB): a bigger reply is refused.
const MAX_BULK: usize = 1024 * 1024;
/// The most items read in one array reply.
const MAX_ARRAY: usize = 1024;
/// Nesting of array replies (the broker's commands need 2 at most).
const MAX_DEPTH: usize = 3;
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 32;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("Redis I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis did not answer within the timeout")]
    Timeout,
    #[error("malformed Redis reply: {0}")]
    Protocol(&'static str),
    /// An error reply (`-ERR ...`, `-NOAUTH ...`); its text never contains our data.
    #[error("Redis refused the command: {0}")]
    Server(String),
}

impl RedisError {
    /// A fixed label for metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RedisError::Connect(_) => "connect",
            RedisError::Io(_) => "io",
            RedisError::Timeout => "timeout",
            RedisError::Protocol(_) => "protocol",
            RedisError::Server(_) => "server",
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open, authenticated connection.
pub(crate) struct Conn {
    io: BufStream<Box<dyn Io>>,
}

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    username: Option<String>,
    password: Option<SecretString>,
    db: u32,
    timeout: Duration,
}

/// A Redis client: connection settings and the idle connections.
pub(crate) struct Client {
    target: Arc<Target>,
    idle: Mutex<Vec<Conn>>,
}

impl Client {
    /// Builds the client; connects lazily (a Redis down at start does not stop the broker).
    pub(crate) fn new(cfg: &SharedCacheConfig) -> Result<Self, String> {
        Ok(Client {
            target: Arc::new(target(cfg)?),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The configured command timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// Runs one command on an idle or new connection, within the timeout. A reused
    /// connection that turns out dead (Redis restarted, an idle connection closed by a proxy)
    /// empties the pool, since its siblings are as stale, and the command is tried once more on
    /// a new connection.
    pub(crate) async fn cmd(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        // A timed-out command drops its connection (its reply may still arrive on it).
        tokio::time::timeout(self.target.timeout, async {
            let idle = self.idle.lock().pop();
            let reused = idle.is_some();
            match self.run(idle, args).await {
                Err(RedisError::Io(_) | RedisError::Protocol(_)) if reused => {
                    self.idle.lock().clear();
                    self.run(None, args).await
                }
                r => r,
            }
        })
        .await
        .map_err(|_| RedisError::Timeout)?
    }

    async fn run(&self, conn: Option<Conn>, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut conn = match conn {
            Some(c) => c,
            None => Conn::open(&self.target).await?,
        };
        match conn.call(args).await {
            Ok(reply) => {
                self.keep(conn);
                Ok(reply)
            }
            Err(e @ RedisError::Server(_)) => {
                self.keep(conn);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// A dedicated connection for `SUBSCRIBE` (never returned to the pool).
    pub(crate) async fn dedicated(&self) -> Result<Conn, RedisError> {
        tokio::time::timeout(self.target.timeout, Conn::open(&self.target))
            .await
            .map_err(|_| RedisError::Timeout)?
    }
}

fn target(cfg: &SharedCacheConfig) -> Result<Target, String> {
    let url = &cfg.url;
    let host = url
        .host_str()
        .ok_or("cache.shared.url has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = match url.scheme() {
        "rediss" => Some(tls_connector()?),
        _ => None,
    };
    Ok(Target {
        port: url.port().unwrap_or(6379),
        host,
        tls,
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        db: db_of(url),
        timeout: cfg.timeout,
    })
}

fn db_of(url: &Url) -> u32 {
    url.path().trim_start_matches('/').parse().unwrap_or(0)
}

/// TLS with the Mozilla root set (webpki-roots), as the broker's HTTPS client does.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up for Redis failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Conn {
    async fn open(t: &Target) -> Result<Conn, RedisError> {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| RedisError::Connect(e.kind().to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &t.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|_| RedisError::Connect("invalid TLS server name".into()))?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| RedisError::Connect(format!("TLS: {}", e.kind())))?,
                )
            }
        };
        let mut conn = Conn {
            io: BufStream::new(io),
        };
        if let Some(p) = &t.password {
            let p = p.expose_secret().as_bytes();
            let r = match &t.username {
                Some(u) => conn.call(&[b"AUTH", u.as_bytes(), p]).await,
                None => conn.call(&[b"AUTH", p]).await,
            };
            // The error text of a failed AUTH is Redis's own (`WRONGPASS ...`): no secret.
            r?;
        }
        if t.db != 0 {
            conn.call(&[b"SELECT", t.db.to_string().as_bytes()]).await?;
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.send(args).await?;
        self.read().await
    }

    /// Sends one command without reading (`SUBSCRIBE`'s replies arrive as messages).
    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        let mut buf = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.io.write_all(&buf).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads one reply; an error reply is `Err(Server)`.
    pub(crate) async fn read(&mut self) -> Result<Reply, RedisError> {
        read_reply(&mut self.io, 0).await
    }

    /// Splits a subscribed connection: a reader that owns its half (so a pending read is
    /// never cancelled half-way) and a writer for `PING`s.
    pub(crate) fn split(self) -> (SubReader, SubWriter) {
        let (r, w) = tokio::io::split(self.io);
        (SubReader(tokio::io::BufReader::new(r)), SubWriter(w))
    }
}

/// The reading half of a subscribed connection.
pub(crate) struct SubReader(tokio::io::BufReader<tokio::io::ReadHalf<BufStream<Box<dyn Io>>>>);

/// The writing half of a subscribed connection.
pub(crate) struct SubWriter(tokio::io::WriteHalf<BufStream<Box<dyn Io>>>);

impl SubReader {
    /// Reads one reply, giving the reader back with it (the future owns the reader, so it can
    /// be kept across `select!` rounds without losing a partly read reply).
    pub(crate) async fn next(mut self) -> (Self, Result<Reply, RedisError>) {
        let r = read_reply(&mut self.0, 0).await;
        (self, r)
    }
}

impl SubWriter {
    pub(crate) async fn ping(&mut self) -> Result<(), RedisError> {
        self.0.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        self.0.flush().await?;
        Ok(())
    }
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<Vec<u8>, RedisError> {
    let mut line = Vec::new();
    // A line is a type byte and a number or a short status: bounded well below MAX_BULK.
    let n = (&mut *r).take(4096).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(RedisError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(RedisError::Protocol("line without CRLF or too long"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(b: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RedisError::Protocol("bad integer"))
}

fn read_reply<'a, R: AsyncBufReadExt + Unpin + Send>(
    r: &'a mut R,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RedisError>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (kind, rest) = line
            .split_first()
            .ok_or(RedisError::Protocol("empty line"))?;
        match kind {
            b'+' => Ok(Reply::Simple(String::from_utf8_lossy(rest).into_owned())),
            b'-' => Err(RedisError::Server(
                String::from_utf8_lossy(rest).into_owned(),
            )),
            b':' => Ok(Reply::Int(parse_int(rest)?)),
            b'$' => {
                let n = parse_int(rest)?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let n = usize::try_from(n).map_err(|_| RedisError::Protocol("bad length"))?;
                if n > MAX_BULK {
                    return Err(RedisError::Protocol("bulk string too large"));
                }
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf).await?;
                if !buf.ends_with(b"\r\n") {
                    return Err(RedisError::Protocol("bulk string without CRLF"));
                }
                buf.truncate(n);
                Ok(Reply::Bulk(Some(buf)))
            }
            b'*' => {
                let n = parse_int(rest)?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let n = usize::try_from(n).map_err(|_| RedisError::Protocol("bad length"))?;
                if n > MAX_ARRAY || depth >= MAX_DEPTH {
                    return Err(RedisError::Protocol("array too large or too deep"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    // An error inside an array (EXEC) is not used by the broker: fail the call.
                    items.push(read_reply(r, depth + 1).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(RedisError::Protocol("unknown reply type")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, RedisError> {
        let mut r = tokio::io::BufReader::new(bytes);
        read_reply(&mut r, 0).await
    }

    #[tokio::test]
    async fn parses_the_reply_types() {
        assert_eq!(
            parse(b"+OK\r\n").await.ok(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(parse(b":42\r\n").await.ok(), Some(Reply::Int(42)));
        assert_eq!(parse(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            parse(b"*2\r\n$3\r\nabc\r\n$-1\r\n").await.ok(),
            Some(Reply::Array(Some(vec![
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Bulk(None)
            ])))
        );
        assert!(matches!(
            parse(b"-ERR nope\r\n").await,
            Err(RedisError::Server(_))
        ));
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_replies() {
        let big = format!("${}\r\n", MAX_BULK + 1);
        assert!(matches!(
            parse(big.as_bytes()).await,
            Err(RedisError::Protocol(_))
        ));
        assert!(matches!(
            parse(b"$3\r\nabcd\r\n").await,
            Err(RedisError::Protocol(_))
        ));
        assert!(matches!(
            parse(b"?x\r\n").await,
            Err(RedisError::Protocol(_))
        ));
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").await.is_err());
    }
}
