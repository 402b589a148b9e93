//! The real-Backstage interop harness (`tests/backstage/backend.js`): a minimal real Backstage
//! backend built from the pinned `@backstage/*` npm packages, started on 127.0.0.1. It mints real
//! tokens through Backstage's own APIs and gives Backstage's own verdict on any token, so a test
//! can compare the broker's verdict with Backstage's for the same token.
//!
//! Needs `scripts/backstage-harness install` once (`scripts/test` runs it). Without it every
//! test that uses the harness fails with a message saying so: a skipped interop check is not a
//! pass.
//!
//! One backend per test binary ([`Backstage::shared`], ~3-4 s to start); [`Backstage::start`]
//! gives a private one that is killed on drop. The shared one is never dropped (statics are
//! not), so the backend exits by itself when its stdin (a pipe from this process) closes.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// `backend.auth.externalAccess` of the harness (tests/backstage/backend.js `FACTS`).
pub const STATIC_TOKEN: &str = "harness-static-token-1";
pub const STATIC_SUBJECT: &str = "harness-static";
/// Restricted to plugin `catalog`: the `verdict` plugin answers 403.
pub const RESTRICTED_TOKEN: &str = "harness-restricted-1";
pub const RESTRICTED_SUBJECT: &str = "harness-restricted";
/// Restricted to plugin `verdict`, permission `harness.thing.read`, action `read`.
pub const RESTRICTED_VERDICT_TOKEN: &str = "harness-restricted-verdict-1";
pub const RESTRICTED_VERDICT_SUBJECT: &str = "harness-restricted-verdict";
/// `type: legacy` entry: base64url secret (the HS256 key is its decoded bytes) and subject.
pub const LEGACY_SECRET: &str = "aGFybmVzcy1sZWdhY3ktc2VjcmV0LTAxMjM0NTY3ODk";
pub const LEGACY_SUBJECT: &str = "harness-legacy";
/// `backend.auth.keys[0].secret`; Backstage's fixed subject for these.
pub const KEYS_SECRET: &str = "aGFybmVzcy1rZXlzLXNlY3JldC0wMTIzNDU2Nzg5YWI";
pub const KEYS_SUBJECT: &str = "external:backstage-plugin";

/// The plugin that mints plugin tokens (their `sub`), and the one that gives the verdict (the
/// `aud` its plugin tokens need).
pub const MINTER_PLUGIN: &str = "minter";
pub const VERDICT_PLUGIN: &str = "verdict";

const START_TIMEOUT: Duration = Duration::from_secs(90);
const LOG_TAIL: usize = 60;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (panics) with the fix when the harness is not installed.
fn require_installed(root: &Path) {
    let native =
        root.join("tests/backstage/node_modules/better-sqlite3/build/Release/better_sqlite3.node");
    let backstage =
        root.join("tests/backstage/node_modules/@backstage/backend-defaults/package.json");
    if !native.is_file() || !backstage.is_file() {
        panic!(
            "the real-Backstage harness is not installed ({} is missing or incomplete).\n\
             Run `scripts/backstage-harness install` (about 2-3 minutes, npm registry only), \
             or the whole suite with `scripts/test`, which installs it.",
            root.join("tests/backstage/node_modules").display()
        );
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    l.local_addr().expect("local_addr").port()
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn push_tail(tail: &Tail, line: String) {
    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() == LOG_TAIL {
        t.pop_front();
    }
    t.push_back(line);
}

fn tail_text(tail: &Tail) -> String {
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    t.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Drains a pipe line by line into `tail` (the backend must never block on a full pipe),
/// forwarding each line to `tx` if given.
fn drain(pipe: impl Read + Send + 'static, tail: Tail, tx: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            push_tail(&tail, line);
        }
    });
}

/// A running harness backend.
pub struct Backstage {
    child: Mutex<Child>,
    // Held so that the backend sees EOF (and exits) when this process goes away.
    _stdin: ChildStdin,
    base: String,
    http: reqwest::Client,
    log: Tail,
    /// Seconds from spawn to `READY`.
    pub startup: Duration,
}

impl Backstage {
    /// The backend shared by all tests of this binary (started on first use).
    pub fn shared() -> &'static Backstage {
        static SHARED: OnceLock<Backstage> = OnceLock::new();
        SHARED.get_or_init(Backstage::start)
    }

    /// Starts a private backend on a free port; it is killed on drop.
    pub fn start() -> Backstage {
        let root = repo_root();
        require_installed(&root);
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&root, free_port()) {
                Ok(b) => return b,
                // Another process took the port between probe and listen: try another one.
                Err((true, log)) => last = log,
                Err((false, log)) => panic!("the Backstage harness did not start:\n{log}"),
            }
        }
        panic!("the Backstage harness did not start (port always in use):\n{last}");
    }

    /// `Err((port_in_use, log))`.
    fn try_start(root: &Path, port: u16) -> Result<Backstage, (bool, String)> {
        let t0 = Instant::now();
        let mut cmd = Command::new("node");
        cmd.arg(root.join("tests/backstage/backend.js"))
            .arg(port.to_string())
            .current_dir(root.join("tests/backstage"))
            .env("BACKSTAGE_HARNESS_EXIT_ON_STDIN_EOF", "1")
            .env(
                "LOG_LEVEL",
                std::env::var("BACKSTAGE_HARNESS_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run `node` for the Backstage harness ({e}); install Node.js >= 20")
        });
        let log: Tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        drain(child.stdout.take().expect("stdout"), log.clone(), Some(tx));
        drain(child.stderr.take().expect("stderr"), log.clone(), None);
        let stdin = child.stdin.take().expect("stdin");
        let deadline = t0 + START_TIMEOUT;
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(base) = line.strip_prefix("READY ") {
                        break base.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the backend is gone; give stderr a moment to be drained.
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(100));
                    let text = tail_text(&log);
                    return Err((
                        text.contains("EADDRINUSE"),
                        format!("exit status {status:?}; output:\n{text}"),
                    ));
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    false,
                    format!(
                        "no READY line within {START_TIMEOUT:?}; output:\n{}",
                        tail_text(&log)
                    ),
                ));
            }
        };
        // Keep draining stdout after READY (the receiver is simply dropped).
        drop(rx);
        let http = reqwest::Client::builder()
            // Tests run on different runtimes; never reuse a connection across them.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Ok(Backstage {
            child: Mutex::new(child),
            _stdin: stdin,
            base,
            http,
            log,
            startup: t0.elapsed(),
        })
    }

    /// `http://127.0.0.1:<port>`, the backend's `backend.baseUrl`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Base URL of a plugin as Backstage's default discovery gives it.
    pub fn plugin_url(&self, plugin_id: &str) -> String {
        format!("{}/api/{plugin_id}", self.base)
    }

    /// The auth backend's JWKS (user and limited user tokens).
    pub fn auth_jwks_url(&self) -> String {
        format!("{}/api/auth/.well-known/jwks.json", self.base)
    }

    /// A plugin's own JWKS (plugin tokens whose `sub` is that plugin).
    pub fn plugin_jwks_url(&self, plugin_id: &str) -> String {
        format!("{}/api/{plugin_id}/.backstage/auth/v1/jwks.json", self.base)
    }

    /// The last lines the backend printed (for failure messages).
    pub fn log_tail(&self) -> String {
        tail_text(&self.log)
    }

    /// GET a minter route and return its `token`; `query` as (name, value) pairs.
    pub async fn mint(&self, route: &str, query: &[(&str, &str)]) -> String {
        let url = format!("{}/api/minter/{route}", self.base);
        let resp = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\nharness log:\n{}", self.log_tail()));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match body.get("token").and_then(Value::as_str) {
            Some(t) if status.is_success() => t.to_string(),
            _ => panic!(
                "minting {route} {query:?} failed: {status} {body}\nharness log:\n{}",
                self.log_tail()
            ),
        }
    }

    /// A real user token (`vnd.backstage.user`) for `user:default/<user>` (or `user` itself if it
    /// is a full entity ref), issued by the auth backend's real `ctx.issueToken`.
    pub async fn user_token(&self, user: &str) -> String {
        self.mint("user-token", &[("user", user)]).await
    }

    /// The limited user token (`vnd.backstage.limited-user`) of a fresh user token.
    pub async fn limited_user_token(&self, user: &str) -> String {
        self.mint("limited-user-token", &[("user", user)]).await
    }

    /// A plugin token from plugin `minter` as itself for `target` (its `aud`).
    pub async fn plugin_token(&self, target: &str) -> String {
        self.mint("plugin-token", &[("target", target)]).await
    }

    /// A plugin token from `minter` on behalf of `user` for `target`.
    pub async fn obo_token(&self, user: &str, target: &str) -> String {
        self.mint("obo-token", &[("user", user), ("target", target)])
            .await
    }

    /// Any mint with Backstage's issuing clock moved back `ago_secs` (≤ 7200): `ago_secs = 7200`
    /// gives a really Backstage-signed token that expired an hour ago. `route` is one of
    /// `user-token`, `limited-user-token`, `plugin-token`, `obo-token`.
    pub async fn mint_ago(&self, route: &str, query: &[(&str, &str)], ago_secs: u64) -> String {
        let ago = ago_secs.to_string();
        let mut q = query.to_vec();
        q.push(("ago", &ago));
        self.mint(route, &q).await
    }

    /// Backstage's verdict on `token` presented as `Authorization: Bearer <token>` to a default
    /// route of plugin `verdict` (user or service principals; limited user tokens refused).
    /// Success: `{"status":200,"type":"user","userEntityRef","actor"?,"expiresAt"?}` or
    /// `{"status":200,"type":"service","subject","accessRestrictions"?,"expiresAt"?}`.
    /// Refusal: `{"status":401|403|500,"error":<Backstage error name>,"message"}`.
    pub async fn verdict(&self, token: &str) -> Value {
        self.verdict_at("whoami", Some(&format!("Bearer {token}")))
            .await
    }

    /// As [`Self::verdict`], on a route that allows limited access (limited user tokens accepted).
    pub async fn verdict_limited(&self, token: &str) -> Value {
        self.verdict_at("whoami-limited", Some(&format!("Bearer {token}")))
            .await
    }

    /// As [`Self::verdict`] with a raw `Authorization` header value (or none).
    pub async fn verdict_at(&self, route: &str, authorization: Option<&str>) -> Value {
        let url = format!("{}/api/verdict/{route}", self.base);
        let mut req = self.http.get(&url);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\nharness log:\n{}", self.log_tail()));
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            let mut v = body;
            v["status"] = json!(200);
            v
        } else {
            json!({
                "status": status,
                "error": body["error"]["name"],
                "message": body["error"]["message"],
            })
        }
    }

    /// GET a JSON document from the backend (e.g. a JWKS).
    pub async fn get_json(&self, url: &str) -> Value {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }
}

impl Drop for Backstage {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A legacy HS256 token as Backstage's `ServerTokenManager` makes it: header exactly
/// `{"alg":"HS256"}`, the given claims, signed with the base64url-decoded `secret`.
/// Claims for a valid one: `{"sub":"backstage-server","exp":now+3600}`.
pub fn legacy_token(secret_b64url: &str, claims: &Value) -> String {
    let key = URL_SAFE_NO_PAD
        .decode(secret_b64url.trim_end_matches('='))
        .expect("secret is base64url");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"))
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The decoded (unverified) JOSE header and payload of a compact JWS.
pub fn decode_jws(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let p = parts.next().expect("JWS part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
    };
    let header = part();
    let payload = part();
    (header, payload)
}

/// `token` with one character of its signature changed (in the middle: the last character of
/// an ES256 signature partly holds unused bits that lenient decoders ignore).
pub fn tamper_signature(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').expect("JWS");
    let mut sig: Vec<u8> = sig.bytes().collect();
    let i = sig.len() / 2;
    sig[i] = if sig[i] == b'A' { b'B' } else { b'A' };
    format!("{head}.{}", String::from_utf8(sig).expect("ascii"))
}

/// `token` with its payload replaced (signature kept): a forged claim set.
pub fn replace_payload(token: &str, payload: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().expect("header");
    let _ = parts.next();
    let sig = parts.next().expect("signature");
    format!(
        "{header}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).expect("payload"))
    )
}
