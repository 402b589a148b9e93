//! The eviction broadcast: one replica publishes a selector (say, a subject whose entries must
//! go), every replica's subscriber task hands it to the callback given at construction, which
//! drops the matching first-level entries.
//!
//! Messages go over Redis pub/sub on `<keyPrefix>evict`, sealed like cached values (the
//! channel name is the associated data), so a selector naming a user is not readable in Redis
//! and a forged message is dropped. The subscriber reconnects by itself (after one second)
//! when its connection fails or stays silent through two keep-alive `PING`s (30 s apart); a message published while a replica is disconnected is not
//! delivered to it (pub/sub keeps nothing), which is why evicted entries must also be removed
//! from Redis by the publisher and why first-level entries are short-lived anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::resp::{Client, Reply};
use super::seal::{Keyring, Record};

/// The pause before a failed subscription connects again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// A quiet subscription sends `PING` this often; two intervals without any answer end it.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Publishes evictions and runs this replica's subscriber.
pub struct EvictionChannel {
    client: Arc<Client>,
    ring: Arc<Keyring>,
    channel: String,
    subscribed: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EvictionChannel {
    pub(super) fn start(
        client: Arc<Client>,
        ring: Arc<Keyring>,
        channel: String,
        on_evict: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Arc<Self> {
        let subscribed = Arc::new(AtomicBool::new(false));
        let task = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(subscriber(
                client.clone(),
                ring.clone(),
                channel.clone(),
                subscribed.clone(),
                on_evict,
            ))
        });
        if task.is_none() {
            tracing::warn!("no async runtime: the eviction subscriber does not run");
        }
        Arc::new(EvictionChannel {
            client,
            ring,
            channel,
            subscribed,
            task,
        })
    }

    /// Broadcasts `selector` to every replica (this one included). Returns how many
    /// subscribers Redis delivered it to; an error when Redis is unavailable.
    pub async fn publish(&self, selector: &str) -> Result<u64, String> {
        let value = self
            .ring
            .seal(&self.channel, &Record::Evict(selector.to_owned()))
            .ok_or("could not seal the eviction message")?;
        match self
            .client
            .cmd(&[b"PUBLISH", self.channel.as_bytes(), &value])
            .await
        {
            Ok(Reply::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            Ok(_) => Err("unexpected PUBLISH reply".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether this replica's subscriber is connected and subscribed right now.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

impl Drop for EvictionChannel {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn subscriber(
    client: Arc<Client>,
    ring: Arc<Keyring>,
    channel: String,
    subscribed: Arc<AtomicBool>,
    on_evict: Arc<dyn Fn(&str) + Send + Sync>,
) {
    loop {
        match subscribe_once(&client, &ring, &channel, &subscribed, on_evict.as_ref()).await {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "eviction subscription lost; subscribing again");
            }
        }
        subscribed.store(false, Ordering::Relaxed);
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

async fn subscribe_once(
    client: &Client,
    ring: &Keyring,
    channel: &str,
    subscribed: &AtomicBool,
    on_evict: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), super::resp::RedisError> {
    let mut conn = client.dedicated().await?;
    conn.send(&[b"SUBSCRIBE", channel.as_bytes()]).await?;
    // The confirmation: ["subscribe", channel, 1].
    tokio::time::timeout(client.timeout(), conn.read())
        .await
        .map_err(|_| super::resp::RedisError::Timeout)??;
    subscribed.store(true, Ordering::Relaxed);
    // A connection that silently died (no RST: a partition, a dropped NAT entry) would leave
    // the subscriber waiting forever: PING every KEEPALIVE and give up after two silent ones.
    let (reader, mut writer) = conn.split();
    let mut pending = Box::pin(reader.next());
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            (reader, reply) = &mut pending => {
                last = tokio::time::Instant::now();
                pending = Box::pin(reader.next());
                handle(reply?, ring, channel, on_evict);
            }
            _ = tick.tick() => {
                if last.elapsed() > KEEPALIVE * 2 {
                    return Err(super::resp::RedisError::Timeout);
                }
                writer.ping().await?;
            }
        }
    }
}

/// One message on the subscribed connection: an eviction is handed to the callback; a `PING`
/// answer (`["pong", ""]`) and anything else are ignored.
fn handle(reply: Reply, ring: &Keyring, channel: &str, on_evict: &(dyn Fn(&str) + Send + Sync)) {
    let Reply::Array(Some(items)) = reply else {
        return;
    };
    let mut items = items.into_iter();
    let (Some(Reply::Bulk(Some(kind))), Some(_), Some(Reply::Bulk(Some(payload)))) =
        (items.next(), items.next(), items.next())
    else {
        return;
    };
    if kind != b"message" {
        return;
    }
    match ring.open(channel, &payload) {
        Some(Record::Evict(selector)) => on_evict(&selector),
        _ => tracing::warn!("dropped an eviction message that did not authenticate"),
    }
}
