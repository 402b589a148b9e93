//! `cache.refreshAhead` (issue 13): an entry read in the last part of its life is renewed once
//! in the background (one more exchange at the IdP, counted there); an entry nobody reads is
//! not. Real HTTP against the broker and the dev IdP.

use std::time::Duration;

use crate::support::*;

#[actix_web::test]
async fn a_hot_entry_is_renewed_once_before_expiry_and_a_cold_one_is_not() {
    // Exchanged tokens live 10 s, margin 0 s: entries live 10 s; the last 50 % is due.
    let mut opts = Opts {
        margin: "0s",
        ..Opts::default()
    };
    for c in &mut opts.idp.clients {
        if c.client_id == "token-broker" {
            c.access_token_lifespan = Some(Duration::from_secs(10));
        }
    }
    let env = start_with_yaml(opts, |y| {
        y.replace("cache:\n", "cache:\n  refreshAhead: \"50%\"\n")
    })
    .await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    let t0 = now();
    let (_, _, c, first) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(c, "miss");
    assert_eq!(
        parts(env.exchange(Some(&bob), "kagenti").await).await.2,
        "miss"
    );
    // Early reads: not due.
    assert_eq!(
        parts(env.exchange(Some(&alice), "kagenti").await).await.2,
        "hit"
    );
    assert_eq!(env.exchanges(), 2);

    // In the last half of the entry's life: the read is a hit and starts one renewal.
    sleep_until_unix(t0 + 6).await;
    for _ in 0..5 {
        let (s, _, c, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
        assert_eq!((s, c.as_str()), (200, "hit"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while env.exchanges() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.exchanges(),
        3,
        "alice's entry renewed exactly once; bob's not at all"
    );

    // After the first entry's deadline: alice still hits (the renewed token), bob misses.
    sleep_until_unix(t0 + 11).await;
    let (s, _, c, renewed) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((s, c.as_str()), (200, "hit"), "{renewed}");
    assert_ne!(
        renewed["access_token"], first["access_token"],
        "a new token"
    );
    assert_eq!(
        parts(env.exchange(Some(&bob), "kagenti").await).await.2,
        "miss"
    );
    env.stop().await;
}
