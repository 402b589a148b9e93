//! Fuzz target: JWT header and claims parsing on both inbound paths — the Backstage compact-JWS
//! parser and jose claim rules (`inbound::backstage::jose`), the JWKS parser, and
//! jsonwebtoken's header decoding and verification as `idp::realm_token` uses it (algorithm from
//! the key, zero leeway). Nothing may panic, and no input may verify (it is not signed by the
//! fixed key below unless the fuzzer forges an ES256 signature).
#![no_main]

use std::sync::LazyLock;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use libfuzzer_sys::fuzz_target;
use token_broker::inbound::backstage::{jose, keys};

/// A fixed P-256 public key (RFC 7515 Appendix A.3).
static KEY: LazyLock<Option<DecodingKey>> = LazyLock::new(|| {
    DecodingKey::from_ec_components(
        "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    )
    .ok()
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        let _ = keys::parse_set(data);
        return;
    };
    if let Some(jws) = jose::parse(token) {
        let _ = jws.alg();
        let aud = ["token-broker".to_owned()];
        let iss = ["http://127.0.0.1/realms/dev".to_owned()];
        let rules = jose::ClaimRules {
            typ: Some("vnd.backstage.plugin"),
            audience: &aud,
            issuer: &iss,
            required: &["sub", "exp"],
        };
        let _ = jose::check_claims(&jws, 1_700_000_000, &rules);
    }
    if let Ok(header) = jsonwebtoken::decode_header(token)
        && let Some(key) = KEY.as_ref()
    {
        let _ = header.kid;
        let mut v = Validation::new(Algorithm::ES256);
        v.leeway = 0;
        v.validate_aud = false;
        let r = jsonwebtoken::decode::<serde_json::Value>(token, key, &v);
        assert!(r.is_err(), "a fuzzed token verified with the fixed key");
    }
    let _ = keys::parse_set(data);
});
