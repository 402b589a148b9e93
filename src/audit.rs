//! The audit log: one structured line per token request (`POST /v1/token`, event
//! `token_request`) and per proxied call (`/v1/proxy`, event `proxy_request`), refused and
//! failed ones included, always JSON on stdout whatever `logging.format` and `RUST_LOG` say,
//! apart from the diagnostic log on stderr (docs/operations.md "Audit log" lists the fields).
//! The line is written here, by hand, and handed to `audit_writer`, which puts it on stdout
//! off the request's thread.
//!
//! Only identifiers and fixed values are recorded: the caller principal, the user's `sub`,
//! the target, fixed outcome codes, Keycloak's `error` code, and short SHA-256 fingerprints
//! (`digest::fingerprint`) of the tokens involved — never a token, never a secret.
//!
//! The record is plain data: the HTTP edge (`http::record`) fills it from what the lower
//! layers return, so this module depends on none of them.

/// What is known about one token request; filled in as the request is handled.
#[derive(Debug, Default)]
pub struct Record {
    /// Principal name (`dev-caller`, `oidc:<sub>`), empty when the caller was not authenticated.
    pub caller: String,
    /// `service`, `user` or empty.
    pub caller_kind: &'static str,
    /// For a user via a plugin (Backstage `obo`): the acting plugin, `plugin:<id>`.
    pub actor: String,
    /// The user: the Backstage entity ref of a Backstage user principal, else the `sub` of the
    /// user's verified Keycloak token.
    pub user: String,
    /// The requested target name (at most 64 characters).
    pub target: String,
    /// Fingerprint of the user's token as presented.
    pub subject_fp: String,
    /// `user` or `service` when a token was served.
    pub identity: &'static str,
    /// `hit`, `miss`, `coalesced` when a token was served.
    pub cache: &'static str,
    /// Fallback reason when a service-account token replaced an exchanged one.
    pub fallback: &'static str,
    /// Fingerprint of the served token.
    pub issued_fp: String,
    /// `issued_user`, `issued_service`, or why not (the token service's outcome, or the
    /// edge's: `bad_request`, `method_refused`, `path_refused`, `upstream_*`, `proxied`).
    pub outcome: &'static str,
    /// Keycloak's HTTP status and `error` when Keycloak refused or failed.
    pub idp_status: Option<u16>,
    pub idp_error: String,
    /// The broker's own RFC 6749 §5.2 `error` code and HTTP status of the answer.
    pub error: String,
    pub status: u16,
    /// Proxy calls only: the request method (at most 16 characters), the retries made and
    /// whether an upstream 401 made the broker exchange again.
    pub method: String,
    pub retries: u32,
    pub reauthenticated: bool,
}

impl Record {
    /// Writes the audit line of a token request (`POST /v1/token`).
    pub fn emit(&self) {
        crate::audit_writer::write_line(&self.line(Event::Token, crate::clock::stamp()));
    }

    /// Writes the audit line of a proxied call (`/v1/proxy`): the fields of a token request
    /// plus `method`, `retries` and `reauthenticated`; `status` is the status the caller got
    /// (the upstream's, or the broker's own refusal).
    pub fn emit_proxy(&self) {
        crate::audit_writer::write_line(&self.line(Event::Proxy, crate::clock::stamp()));
    }

    /// The line, JSON with a trailing newline: the fields in the order and form the audit log
    /// has had since it was a `tracing` JSON layer (`timestamp`, `level`, `message`, `event`,
    /// then the record's fields; `idp_status` only when known), so log shippers see no
    /// change. Written by hand: the `tracing` layer's formatting and its per-event machinery
    /// were a tenth of a cache hit's cost (issue 16).
    fn line(&self, event: Event, at: std::time::SystemTime) -> Vec<u8> {
        let mut o = Vec::with_capacity(512);
        o.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(&mut o, at);
        o.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"");
        o.extend_from_slice(match event {
            Event::Token => b"token request\",\"event\":\"token_request\"",
            Event::Proxy => b"proxy request\",\"event\":\"proxy_request\"",
        });
        let o = &mut o;
        str_field(o, "caller", &self.caller);
        str_field(o, "caller_kind", self.caller_kind);
        str_field(o, "actor", &self.actor);
        str_field(o, "user", &self.user);
        str_field(o, "target", &self.target);
        if event == Event::Proxy {
            str_field(o, "method", &self.method);
        }
        num_field(o, "status", u64::from(self.status));
        str_field(o, "outcome", self.outcome);
        str_field(o, "identity", self.identity);
        str_field(o, "cache", self.cache);
        str_field(o, "fallback", self.fallback);
        if let Some(s) = self.idp_status {
            num_field(o, "idp_status", u64::from(s));
        }
        str_field(o, "idp_error", &self.idp_error);
        str_field(o, "error", &self.error);
        str_field(o, "subject_fp", &self.subject_fp);
        str_field(o, "issued_fp", &self.issued_fp);
        if event == Event::Proxy {
            num_field(o, "retries", u64::from(self.retries));
            o.extend_from_slice(if self.reauthenticated {
                b",\"reauthenticated\":true"
            } else {
                b",\"reauthenticated\":false"
            });
        }
        o.extend_from_slice(b"}\n");
        std::mem::take(o)
    }
}

/// `s` cut to its first `max` characters (the audit log's bound on caller-chosen values),
/// borrowed: no per-character copy when, as usual, it is shorter.
pub fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

fn str_field(o: &mut Vec<u8>, name: &str, value: &str) {
    o.extend_from_slice(b",\"");
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b"\":");
    json_str(o, value);
}

fn num_field(o: &mut Vec<u8>, name: &str, n: u64) {
    o.extend_from_slice(b",\"");
    o.extend_from_slice(name.as_bytes());
    o.extend_from_slice(b"\":");
    digits(o, n, 1);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Token,
    Proxy,
}

/// A JSON string (RFC 8259 §7) escaped as `serde_json` escapes it: `"` and `\\`, the short
/// forms `\\b \\f \\n \\r \\t`, other control characters as `\\u00xx`; the rest as is (UTF-8).
fn json_str(o: &mut Vec<u8>, s: &str) {
    o.push(b'"');
    let b = s.as_bytes();
    // Almost every field needs no escaping: one branch-free (vectorised) pass says so.
    if b.iter()
        .fold(true, |ok, &c| ok & (c >= 0x20) & (c != b'"') & (c != b'\\'))
    {
        o.extend_from_slice(b);
        o.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        o.extend_from_slice(b.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            let hex = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
            o.extend_from_slice(b"\\u00");
            o.push(hex(c >> 4));
            o.push(hex(c & 0xf));
        } else {
            o.extend_from_slice(esc);
        }
        start = i + 1;
    }
    o.extend_from_slice(b.get(start..).unwrap_or_default());
    o.push(b'"');
}

/// RFC 3339 UTC with microseconds (`2026-11-22T08:19:53.128886Z`), the audit log's form.
fn timestamp(o: &mut Vec<u8>, at: std::time::SystemTime) {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    // RFC 3339 with microseconds, digits written directly: through `write!` the seven
    // numbers cost more than the rest of the line (issue 16).
    digits(o, y, 4);
    o.push(b'-');
    digits(o, m, 2);
    o.push(b'-');
    digits(o, day, 2);
    o.push(b'T');
    digits(o, rem / 3600, 2);
    o.push(b':');
    digits(o, rem % 3600 / 60, 2);
    o.push(b':');
    digits(o, rem % 60, 2);
    o.push(b'.');
    digits(o, u64::from(d.subsec_micros()), 6);
    o.push(b'Z');
}

/// `n` in decimal, zero-padded to at least `width` digits (as `{n:0width$}`).
fn digits(o: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            // `n % 10` is below 10: the cast cannot truncate.
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    o.extend_from_slice(buf.get(start..).unwrap_or_default());
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};
    use tracing_subscriber::layer::SubscriberExt;

    /// The `tracing` target audit events had.
    const AUDIT_TARGET: &str = "token_broker::audit";

    /// The audit line as the `tracing` JSON layer wrote it before it was written by hand
    /// (the layer's settings of `telemetry.rs` then): the reference for field order and form.
    fn via_tracing(r: &Record, event: Event) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || match event {
            Event::Token => tracing::info!(
                target: AUDIT_TARGET,
                event = "token_request",
                caller = %r.caller,
                caller_kind = r.caller_kind,
                actor = %r.actor,
                user = %r.user,
                target = %r.target,
                status = r.status,
                outcome = r.outcome,
                identity = r.identity,
                cache = r.cache,
                fallback = r.fallback,
                idp_status = r.idp_status,
                idp_error = %r.idp_error,
                error = %r.error,
                subject_fp = %r.subject_fp,
                issued_fp = %r.issued_fp,
                "token request"
            ),
            Event::Proxy => tracing::info!(
                target: AUDIT_TARGET,
                event = "proxy_request",
                caller = %r.caller,
                caller_kind = r.caller_kind,
                actor = %r.actor,
                user = %r.user,
                target = %r.target,
                method = %r.method,
                status = r.status,
                outcome = r.outcome,
                identity = r.identity,
                cache = r.cache,
                fallback = r.fallback,
                idp_status = r.idp_status,
                idp_error = %r.idp_error,
                error = %r.error,
                subject_fp = %r.subject_fp,
                issued_fp = %r.issued_fp,
                retries = r.retries,
                reauthenticated = r.reauthenticated,
                "proxy request"
            ),
        });
        String::from_utf8(buf.0.lock().clone()).unwrap()
    }

    fn without_timestamp(line: &str) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_str().unwrap().to_owned();
        (line.replacen(&ts, "", 1), ts)
    }

    #[test]
    fn the_line_is_what_the_tracing_json_layer_wrote() {
        let odd = "q\"b\\s/\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é✓";
        let full = Record {
            caller: "user:default/alice".into(),
            caller_kind: "user",
            actor: "plugin:catalog".into(),
            user: odd.into(),
            target: "kagenti".into(),
            subject_fp: "e7121b882f03".into(),
            identity: "user",
            cache: "hit",
            fallback: "idp_unavailable",
            issued_fp: "33c465021639".into(),
            outcome: "issued_user",
            idp_status: Some(400),
            idp_error: "invalid_request".into(),
            error: "x".into(),
            status: 200,
            method: "GET".into(),
            retries: 2,
            reauthenticated: true,
        };
        for r in [full, Record::default()] {
            for event in [Event::Token, Event::Proxy] {
                let now = crate::clock::stamp();
                let mine = String::from_utf8(r.line(event, now)).unwrap();
                let (mine_rest, _) = without_timestamp(&mine);
                let (theirs_rest, _) = without_timestamp(&via_tracing(&r, event));
                assert_eq!(mine_rest, theirs_rest);
                assert!(mine.ends_with("}\n") && mine.lines().count() == 1);
            }
        }
    }

    #[test]
    fn clip_keeps_the_first_characters() {
        for s in [
            "",
            "kagenti",
            "é".repeat(70).as_str(),
            "x".repeat(64).as_str(),
            "y".repeat(65).as_str(),
        ] {
            assert_eq!(clip(s, 64), s.chars().take(64).collect::<String>(), "{s}");
        }
    }

    #[test]
    fn digits_are_written_as_format_writes_them() {
        for n in [0, 7, 42, 999, 1_000, 65_535, 123_456, u64::MAX] {
            for width in [1, 2, 4, 6] {
                let mut o = Vec::new();
                digits(&mut o, n, width);
                assert_eq!(String::from_utf8(o).unwrap(), format!("{n:0width$}"));
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000005Z"),
            (1_795_335_593, 128_886, "2026-11-22T08:19:53.128886Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
        ];
        for (secs, micros, want) in cases {
            let mut o = Vec::new();
            timestamp(
                &mut o,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            );
            assert_eq!(String::from_utf8(o).unwrap(), want);
        }
    }
}
