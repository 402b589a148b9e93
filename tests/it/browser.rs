//! The exchange tester page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over the W3C WebDriver protocol with plain HTTP+JSON. It fills the
//! form, runs a real exchange against the dev IdP (alice → kagenti: decoded result shown) and a
//! failing one (a token whose `aud` lacks `token-broker`: Keycloak's error and its fix shown),
//! and saves screenshots under `target/tmp/browser-test/`. `tester_page_against_real_keycloak` does
//! the same against the real Keycloak of `keycloak_real` (needs `TOKEN_BROKER_KEYCLOAK_TEST=1` too).
//!
//! The dev-IdP test is skipped when `chromedriver` is missing, unless `TOKEN_BROKER_BROWSER_TEST=1`
//! (set by `scripts/test`, which installs the packages), in which case that is a failure. The
//! real-Keycloak one runs only when both `TOKEN_BROKER_BROWSER_TEST=1` and
//! `TOKEN_BROKER_KEYCLOAK_TEST=1`, and otherwise prints a SKIPPED line.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::keycloak_real::{
    ADMIN_TOKEN, Broker, Edits, KC_MAIN, failed_checks, keycloak, loud, str_claim,
};
use crate::support::*;

/// Set to 1 by `scripts/test`: then a missing chromium or chromedriver is a failure.
const GATE: &str = "TOKEN_BROKER_BROWSER_TEST";
const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

struct Wd {
    http: reqwest::Client,
    session: String,
}

impl Wd {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "WebDriver {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    /// The texts of every element matching `css`, in document order.
    async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let mut out = Vec::new();
        for e in found.as_array().unwrap() {
            let id = e[ELEMENT].as_str().unwrap();
            let t = self
                .cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                .await;
            out.push(t.as_str().unwrap_or("").to_owned());
        }
        out
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn wait_text(&self, css: &str, want: &str) -> String {
        let start = Instant::now();
        loop {
            let t = self.text(css).await;
            if t.contains(want) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{css} never showed {want:?}; last: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium session behind its own chromedriver; both end on drop or `close`.
struct Browser {
    wd: Wd,
    profile: std::path::PathBuf,
    _driver: Kill,
}

impl Browser {
    /// Whether chromium and chromedriver are installed: `false` (after a SKIPPED line) when
    /// they are missing and `TOKEN_BROKER_BROWSER_TEST` is not 1; with it, their absence fails.
    fn available(test: &str) -> bool {
        let required = std::env::var(GATE).as_deref() == Ok("1");
        if !std::path::Path::new(DRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
            assert!(
                !required,
                "{DRIVER} / {CHROMIUM} missing: apt-get install chromium chromium-driver"
            );
            loud(&format!(
                "SKIPPED {test}: browser test needs {DRIVER} and {CHROMIUM} (scripts/test installs them)"
            ));
            return false;
        }
        true
    }

    /// `name` keeps the profile directories of tests running in parallel apart.
    async fn start(name: &str) -> Browser {
        let port = free_port();
        let _driver = Kill(
            Command::new(DRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("tb-chromium-{name}-{}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,2200",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        let wd = Wd {
            http: http.clone(),
            session: format!("{base}/session/{id}"),
        };
        Browser {
            wd,
            profile,
            _driver,
        }
    }

    async fn open(&self, url: &str) {
        self.wd
            .cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn close(self) {
        self.wd.cmd(reqwest::Method::DELETE, "", None).await;
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

#[actix_web::test]
async fn tester_page_in_headless_chromium() {
    if !Browser::available("tester_page_in_headless_chromium") {
        return;
    }
    let env = start_default().await;
    let admin = format!("http://{}", env.broker.admin_addr.unwrap());
    let browser = Browser::start("dev").await;
    let wd = &browser.wd;
    browser.open(&format!("{admin}/tester")).await;
    // A wrong credential is refused on the page.
    wd.type_into("#admin-token", "not-the-admin-token").await;
    wd.click("#connect").await;
    wd.wait_text("#status", "refused (HTTP 401)").await;

    wd.type_into("#admin-token", "test-admin-token").await;
    wd.click("#connect").await;
    wd.wait_text("#status", "connected").await;

    // 1. alice (dev user, logged in at the dev IdP) → kagenti: the decoded result.
    wd.click("#target option[value='kagenti']").await;
    wd.click("#dev-user option[value='alice']").await;
    wd.click("#try").await;
    wd.wait_text("#summary", "Keycloak issued a token for target 'kagenti'")
        .await;
    let result = wd.text("#result-claims").await;
    assert!(result.contains("\"aud\": \"kagenti-api\""), "{result}");
    assert!(result.contains("\"azp\": \"token-broker\""), "{result}");
    assert!(
        result.contains("\"preferred_username\": \"alice\""),
        "{result}"
    );
    let checks = wd.text("#checks").await;
    assert!(
        checks.contains("✔ pass") && !checks.contains("✘ fail"),
        "{checks}"
    );
    assert!(
        wd.text("#request")
            .await
            .contains("subject_token=<redacted")
    );
    assert!(wd.text("#response").await.contains("HTTP 200"));
    let shot = wd.screenshot("tester-success.png").await;
    eprintln!("screenshot: {}", shot.display());

    // 2. A pasted token whose aud lacks token-broker: Keycloak's error and the fix.
    let bob = env.login_at("other-frontend", "bob", "bob").await;
    wd.click("#dev-user option[value='']").await;
    wd.type_into("#subject-token", &bob).await;
    wd.click("#try").await;
    wd.wait_text("#summary", "Client is not within the token audience")
        .await;
    let hint = wd.text("#hint").await;
    assert!(
        hint.contains("Audience mapper for 'token-broker'"),
        "{hint}"
    );
    let checks = wd.text("#checks").await;
    assert!(checks.contains("✘ fail"), "{checks}");
    assert!(
        checks.contains("Fix: add an Audience mapper with Included Client Audience 'token-broker'"),
        "{checks}"
    );
    let response = wd.text("#response").await;
    assert!(response.contains("HTTP 403"), "{response}");
    assert!(response.contains("access_denied"), "{response}");
    // The result section shows fingerprints, never the pasted token.
    let shown = wd.text("#result").await;
    assert!(
        !shown.contains(&bob[bob.len() - 40..]),
        "token shown in the result"
    );
    let shot = wd.screenshot("tester-failure.png").await;
    eprintln!("screenshot: {}", shot.display());

    browser.close().await;
    env.stop().await;
}

/// The same page against the **real Keycloak** (`scripts/keycloak start all`, see
/// `keycloak_real`): the real broker binary configured from config/keycloak.yaml, a pasted token
/// from Keycloak's password grant. Runs only when both `TOKEN_BROKER_BROWSER_TEST=1` and
/// `TOKEN_BROKER_KEYCLOAK_TEST=1` (`scripts/test` sets both); otherwise a SKIPPED line.
#[actix_web::test]
async fn tester_page_against_real_keycloak() {
    const TEST: &str = "tester_page_against_real_keycloak";
    if std::env::var(GATE).as_deref() != Ok("1") {
        loud(&format!(
            "SKIPPED {TEST}: needs {GATE}=1 (chromium) and TOKEN_BROKER_KEYCLOAK_TEST=1 (a real Keycloak); scripts/test sets both"
        ));
        return;
    }
    if !Browser::available(TEST) {
        return;
    }
    let Some(kc) = keycloak(TEST).await else {
        return;
    };
    let b = Broker::start("browser", Edits::default()).await;
    let browser = Browser::start("keycloak").await;
    let wd = &browser.wd;
    browser.open(&format!("{}/tester", b.admin)).await;
    wd.type_into("#admin-token", ADMIN_TOKEN).await;
    wd.click("#connect").await;
    wd.wait_text("#status", "connected").await;
    let issuer = wd.text("#issuer").await;
    assert!(
        issuer.contains(&format!("Keycloak issuer {KC_MAIN}/realms/dev")),
        "{issuer}"
    );

    // 1. alice's token from Keycloak's dev-frontend → kagenti: success, every check passes.
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let sub = str_claim(&alice, "sub");
    wd.click("#target option[value='kagenti']").await;
    wd.type_into("#subject-token", &alice).await;
    wd.click("#try").await;
    let summary = wd
        .wait_text("#summary", "Keycloak issued a token for target 'kagenti'")
        .await;
    assert!(summary.starts_with('✔'), "{summary}");
    let rows = wd.texts("#checks tbody tr").await;
    let passed = rows.iter().filter(|r| r.starts_with("✔ pass")).count();
    assert!(
        passed >= 6 && rows.iter().all(|r| !r.contains("✘ fail")),
        "{rows:#?}"
    );
    // The page shows as many passing checks as the tester's API reports for the same token.
    let api = b
        .tester(json!({"target": "kagenti", "subject_token": alice}))
        .await;
    assert_eq!(failed_checks(&api), Vec::<String>::new(), "{api}");
    let api_passed = api["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == true)
        .count();
    assert_eq!(passed, api_passed, "{rows:#?}\n{api}");
    let result = wd.text("#result-claims").await;
    assert!(result.contains(&format!("\"sub\": \"{sub}\"")), "{result}");
    assert!(result.contains("\"azp\": \"token-broker\""), "{result}");
    assert!(
        result.contains(&format!("\"iss\": \"{KC_MAIN}/realms/dev\"")),
        "{result}"
    );
    assert!(
        wd.text("#request")
            .await
            .contains("subject_token=<redacted")
    );
    assert!(wd.text("#response").await.contains("HTTP 200"));
    assert!(
        !wd.text("#result")
            .await
            .contains(&alice[alice.len() - 40..]),
        "token shown in the result"
    );
    let shot = wd.screenshot("tester-keycloak-success.png").await;
    loud(&format!("screenshot: {}", shot.display()));

    // 2. A token from dev-frontend-no-audience (its aud lacks token-broker): Keycloak's own
    //    refusal, the failed check and its fix naming the client to change.
    let no_aud = kc.login(KC_MAIN, "dev-frontend-no-audience", "alice").await;
    wd.type_into("#subject-token", &no_aud).await;
    wd.click("#try").await;
    let summary = wd
        .wait_text("#summary", "Client is not within the token audience")
        .await;
    assert!(summary.starts_with('✘'), "{summary}");
    let hint = wd.text("#hint").await;
    assert!(
        hint.contains("Audience mapper for 'token-broker'"),
        "{hint}"
    );
    let failed = wd.texts("#checks tbody tr.fail").await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let row = &failed[0];
    assert!(row.starts_with("✘ fail"), "{row}");
    assert!(
        row.contains("Requester client in the subject token's aud or azp"),
        "{row}"
    );
    assert!(
        row.contains("Fix: add an Audience mapper with Included Client Audience 'token-broker'"),
        "{row}"
    );
    assert!(row.contains("Clients → dev-frontend-no-audience"), "{row}");
    let response = wd.text("#response").await;
    assert!(response.contains("HTTP 403"), "{response}");
    assert!(response.contains("access_denied"), "{response}");
    assert!(
        !wd.text("#result")
            .await
            .contains(&no_aud[no_aud.len() - 40..]),
        "token shown in the result"
    );
    let shot = wd.screenshot("tester-keycloak-failure.png").await;
    loud(&format!("screenshot: {}", shot.display()));

    browser.close().await;
    drop(b);
}
