//! Fuzz target: the `application/x-www-form-urlencoded` parser of `POST /v1/token`
//! (`http::form`, RFC 6749 Appendix B, WHATWG URL percent-decoding). Nothing may panic; a
//! parsed form never holds a name twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_broker::http::form;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = form::parse(data) {
        for name in [
            "grant_type",
            "audience",
            "subject_token",
            "scope",
            "resource",
        ] {
            let _ = f.get(name);
            let _ = f.non_empty(name);
        }
    }
});
