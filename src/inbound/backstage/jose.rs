//! Compact JWS parsing and the claim rules of jose 5.10.0 as Backstage applies them
//! (docs/reference/backstage-tokens.md §4): zero clock tolerance, `exp > now`, `nbf <= now`, `iat`
//! a number
//! if present, required claims present, `aud` string-in-set or array-intersects-set, `alg: none`
//! never accepted, and the algorithm must fit the key (RFC 8725 §3.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// A compact JWS split into its parts; nothing verified yet.
pub struct Jws<'a> {
    pub header: Map<String, Value>,
    pub payload: Option<Map<String, Value>>,
    pub signing_input: &'a str,
    pub signature: &'a str,
}

impl Jws<'_> {
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    pub fn claim(&self, key: &str) -> Option<&Value> {
        self.payload.as_ref().and_then(|p| p.get(key))
    }

    /// The header `alg` as a signature algorithm jsonwebtoken can verify; `none` and unknown
    /// values give `None`.
    pub fn alg(&self) -> Option<Algorithm> {
        match self.header_str("alg")? {
            "HS256" => Some(Algorithm::HS256),
            "HS384" => Some(Algorithm::HS384),
            "HS512" => Some(Algorithm::HS512),
            "RS256" => Some(Algorithm::RS256),
            "RS384" => Some(Algorithm::RS384),
            "RS512" => Some(Algorithm::RS512),
            "PS256" => Some(Algorithm::PS256),
            "PS384" => Some(Algorithm::PS384),
            "PS512" => Some(Algorithm::PS512),
            "ES256" => Some(Algorithm::ES256),
            "ES384" => Some(Algorithm::ES384),
            "EdDSA" => Some(Algorithm::EdDSA),
            _ => None,
        }
    }

    /// Verifies the signature with `key` for the header's algorithm.
    pub fn signature_ok(&self, key: &DecodingKey, alg: Algorithm) -> bool {
        jsonwebtoken::crypto::verify(self.signature, self.signing_input.as_bytes(), key, alg)
            .unwrap_or(false)
    }
}

fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Splits a compact JWS. `None` when it is not three parts with a JSON-object header; the
/// payload is `None` when it is not a JSON object (jose then fails verification).
pub fn parse(token: &str) -> Option<Jws<'_>> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = decode_json(h)?;
    let signing_input = token.get(..h.len() + 1 + p.len())?;
    Some(Jws {
        header,
        payload: decode_json(p),
        signing_input,
        signature: s,
    })
}

/// Options of one jose `jwtVerify` call.
#[derive(Default)]
pub struct ClaimRules<'a> {
    pub typ: Option<&'a str>,
    pub audience: &'a [String],
    pub issuer: &'a [String],
    pub required: &'a [&'a str],
}

/// jose's `typ` normalisation: lowercase, without a leading `application/`.
fn normalize_typ(t: &str) -> String {
    let l = t.to_ascii_lowercase();
    l.strip_prefix("application/")
        .map(str::to_owned)
        .unwrap_or(l)
}

/// The claim checks of jose `lib/jwt_claims_set.js` (§4). `Err` names the failed rule.
pub fn check_claims(jws: &Jws<'_>, now: u64, rules: &ClaimRules<'_>) -> Result<(), &'static str> {
    let p = jws.payload.as_ref().ok_or("payload is not a JSON object")?;
    if let Some(want) = rules.typ {
        match jws.header_str("typ") {
            Some(t) if normalize_typ(t) == normalize_typ(want) => {}
            _ => return Err("unexpected typ"),
        }
    }
    let mut required: Vec<&str> = rules.required.to_vec();
    if !rules.audience.is_empty() {
        required.push("aud");
    }
    if !rules.issuer.is_empty() {
        required.push("iss");
    }
    for c in required {
        if !p.contains_key(c) {
            return Err("missing required claim");
        }
    }
    if !rules.issuer.is_empty() {
        match p.get("iss").and_then(Value::as_str) {
            Some(i) if rules.issuer.iter().any(|x| x == i) => {}
            _ => return Err("unexpected iss"),
        }
    }
    if !rules.audience.is_empty() {
        let ok = match p.get("aud") {
            Some(Value::String(a)) => rules.audience.iter().any(|x| x == a),
            Some(Value::Array(a)) => a.iter().any(|v| {
                v.as_str()
                    .is_some_and(|s| rules.audience.iter().any(|x| x == s))
            }),
            _ => false,
        };
        if !ok {
            return Err("unexpected aud");
        }
    }
    let num = |k: &str| -> Result<Option<f64>, &'static str> {
        match p.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err("time claim is not a number"),
        }
    };
    let now_f = now as f64;
    num("iat")?;
    if let Some(nbf) = num("nbf")?
        && nbf > now_f
    {
        return Err("not yet valid");
    }
    if let Some(exp) = num("exp")?
        && exp <= now_f
    {
        return Err("expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn jws(h: Value, p: Value) -> String {
        format!("{}.{}.sig", enc(&h), enc(&p))
    }

    #[test]
    fn claim_rules() {
        let t = jws(
            serde_json::json!({"typ": "vnd.backstage.plugin", "alg": "ES256"}),
            serde_json::json!({"sub": "a", "aud": ["x", "p"], "iat": 1, "exp": 100, "nbf": 50}),
        );
        let j = parse(&t).unwrap();
        let aud = vec!["p".to_owned()];
        let rules = ClaimRules {
            typ: Some("vnd.backstage.plugin"),
            audience: &aud,
            issuer: &[],
            required: &["iat", "exp", "sub", "aud"],
        };
        assert!(check_claims(&j, 99, &rules).is_ok());
        assert_eq!(check_claims(&j, 100, &rules), Err("expired"));
        assert_eq!(check_claims(&j, 49, &rules), Err("not yet valid"));
        let other = vec!["q".to_owned()];
        assert_eq!(
            check_claims(
                &j,
                60,
                &ClaimRules {
                    audience: &other,
                    ..rules
                }
            ),
            Err("unexpected aud")
        );
        assert_eq!(
            check_claims(
                &j,
                60,
                &ClaimRules {
                    required: &["jti"],
                    audience: &[],
                    ..Default::default()
                }
            ),
            Err("missing required claim")
        );
        assert_eq!(
            check_claims(
                &j,
                60,
                &ClaimRules {
                    typ: Some("application/VND.backstage.plugin"),
                    ..Default::default()
                }
            ),
            Ok(())
        );
    }

    #[test]
    fn parsing() {
        assert!(parse("a.b").is_none());
        assert!(parse("a.b.c.d").is_none());
        let none = jws(serde_json::json!({"alg": "none"}), serde_json::json!({}));
        assert!(parse(&none).unwrap().alg().is_none());
    }
}
