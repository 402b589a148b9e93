//! Fuzz target: the `application/x-www-form-urlencoded` parser of `POST /v1/token`
//! (`http::form`, RFC 6749 Appendix B, WHATWG URL percent-decoding). Nothing may panic; a
//! parsed form never holds a name twice; and what it accepts it decodes exactly as the `url`
//! crate's WHATWG `application/x-www-form-urlencoded` parser does (a differential check of the
//! broker's own, allocation-free parser against a reference, pair by pair, in order).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_broker::http::form;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = form::parse(data) {
        let reference: Vec<(String, String)> = url::form_urlencoded::parse(data)
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let ours: Vec<(&str, &str)> = f.pairs().collect();
        assert_eq!(ours.len(), reference.len(), "pair count differs");
        for ((n, v), (rn, rv)) in ours.iter().zip(&reference) {
            assert_eq!((*n, *v), (rn.as_str(), rv.as_str()), "decoding differs");
        }
        let names: std::collections::HashSet<&str> = ours.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), ours.len(), "a name is held twice");
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
