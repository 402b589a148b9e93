//! `cache.shared`: the Redis second-level cache section.

use super::*;

const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn with_shared(shared: &str) -> String {
    format!("{MINIMAL}cache:\n  shared:\n{shared}")
}

#[test]
fn a_valid_section_with_defaults() {
    let yaml = with_shared(&format!(
        "    url: rediss://redis.example.com:6380/2\n    username: broker\n    password: {SECRET}\n    encryptionKeys:\n      - id: k2\n        key: {KEY_B64}\n      - id: k1\n        key: {KEY_B64}\n"
    ));
    let c = load(&yaml).unwrap();
    let s = c.cache.shared.clone().unwrap();
    assert_eq!(s.url.scheme(), "rediss");
    assert_eq!(s.key_prefix, "token-broker:");
    assert_eq!(s.username.as_deref(), Some("broker"));
    assert_eq!(s.password.clone().unwrap().expose_secret(), SECRET);
    let ids: Vec<&str> = s.encryption_keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["k2", "k1"]);
    assert_eq!(s.encryption_keys[0].key.expose_secret()[31], 31);
    assert_eq!(s.timeout, Duration::from_millis(250));
    assert_eq!(s.lock_ttl, Duration::from_secs(15));
    assert_eq!(s.lock_wait, Duration::from_secs(15));
    let debug = format!("{:?}", c.cache);
    assert!(
        !debug.contains(SECRET) && !debug.contains(KEY_B64),
        "{debug}"
    );
}

#[test]
fn absent_means_no_shared_cache() {
    assert!(load(MINIMAL).unwrap().cache.shared.is_none());
}

#[test]
fn keys_from_a_file_and_errors_never_echo_the_key() {
    let dir = std::env::temp_dir().join(format!("tb-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("k"), format!("{KEY_B64}\n")).unwrap();
    let yaml = with_shared(
        "    url: redis://127.0.0.1:6379\n    encryptionKeys:\n      - id: k1\n        key: { $file: k }\n",
    );
    let c = load_str(&yaml, &env(&[]), &dir).unwrap();
    assert_eq!(c.cache.shared.unwrap().encryption_keys.len(), 1);

    let short = "c2hvcnQtU0VOVElORUwta2V5"; // "short-SENTINEL-key"
    let yaml = with_shared(&format!(
        "    url: redis://127.0.0.1:6379\n    encryptionKeys:\n      - id: k1\n        key: {short}\n"
    ));
    let issues = errors(&yaml);
    assert_issue(&issues, "cache.shared.encryptionKeys[0].key", "32 bytes");
    let text = format!("{issues:?}");
    assert!(
        !text.contains(short) && !text.contains("SENTINEL"),
        "{text}"
    );
}

#[test]
fn bad_urls_ids_and_missing_keys_are_reported() {
    let issues = errors(&with_shared(
        "    url: http://redis:6379\n    encryptionKeys: []\n",
    ));
    assert_issue(&issues, "cache.shared.url", "redis or rediss");
    assert_issue(&issues, "cache.shared.encryptionKeys", "at least one");

    let issues = errors(&with_shared(&format!(
        "    url: redis://user:{SECRET}@redis:6379\n    encryptionKeys:\n      - id: a\n        key: {KEY_B64}\n      - id: a\n        key: {KEY_B64}\n"
    )));
    assert_issue(&issues, "cache.shared.url", "user name or password");
    assert_issue(&issues, "cache.shared.encryptionKeys[1].id", "another key");
    assert!(!format!("{issues:?}").contains(SECRET));

    let issues = errors(&with_shared("    url: redis://redis/x\n"));
    assert_issue(&issues, "cache.shared.url", "database number");
    assert_issue(&issues, "cache.shared.encryptionKeys", "is required");
}
