//! Strict parsing of the `application/x-www-form-urlencoded` token request (RFC 8693 §2.1).
//!
//! Stricter than a generic form extractor on purpose:
//! - every name and value must decode to UTF-8 (a lossy decode could turn two different
//!   tokens into one string);
//! - a parameter may appear at most once (RFC 6749 §3.1: "Request and response parameters
//!   MUST NOT be included more than once"), so `audience=a&audience=b` cannot smuggle a
//!   second target past a check of the first;
//! - at most [`MAX_PARAMS`] parameters;
//! - unknown parameters are ignored (RFC 6749 §3.2: "MUST ignore unrecognized request
//!   parameters").

use std::borrow::Cow;

/// The most parameters a token request may carry.
pub const MAX_PARAMS: usize = 32;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the request body is not valid form-urlencoded UTF-8")]
    NotUtf8,
    #[error("parameter '{0}' is included more than once")]
    Duplicated(String),
    #[error("too many parameters (at most {MAX_PARAMS})")]
    TooMany,
}

/// A parsed form: parameter names and values, borrowed from the body when nothing in them
/// was encoded (the usual case: a token request is a handful of plain parameters), so parsing
/// allocates nothing; looked up by a linear scan of at most [`MAX_PARAMS`] pairs.
#[derive(Debug, Default)]
pub struct Form<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Form<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The parameters in the order they came (for the fuzz target's differential check).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// A parameter that is absent or empty counts as absent (RFC 6749 §3.1: "Parameters sent
    /// without a value MUST be treated as if they were omitted").
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

fn decode(component: &[u8]) -> Result<Cow<'_, str>, FormError> {
    if !component.iter().any(|&b| b == b'+' || b == b'%') {
        return std::str::from_utf8(component)
            .map(Cow::Borrowed)
            .map_err(|_| FormError::NotUtf8);
    }
    let plus_as_space: Vec<u8> = component
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space);
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// WHATWG URL percent-decoding: a `%` not followed by two hex digits stays literal.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

pub fn parse(body: &[u8]) -> Result<Form<'_>, FormError> {
    let mut map: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(4);
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if map.len() >= MAX_PARAMS {
            return Err(FormError::TooMany);
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or(&[]),
                pair.get(i + 1..).unwrap_or(&[]),
            ),
            None => (pair, &[][..]),
        };
        let name = decode(name)?;
        let value = decode(value)?;
        if map.iter().any(|(n, _)| *n == name) {
            return Err(FormError::Duplicated(name.chars().take(64).collect()));
        }
        map.push((name, value));
    }
    Ok(Form(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let f = parse(b"a=1&b=x+y%20z&c=%41%zz&d").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y z"));
        assert_eq!(f.get("c"), Some("A%zz"));
        assert_eq!(f.get("d"), Some(""));
        assert_eq!(f.non_empty("d"), None);
    }

    /// What the parser accepts, it decodes as the `url` crate's WHATWG form parser does (the
    /// fuzz target `token_form` checks the same on generated input).
    #[test]
    fn decodes_as_the_whatwg_reference_does() {
        for body in [
            &b"a=1&b=x+y%20z&c=%41%zz&d"[..],
            b"=x&y=&&z=a=b",
            b"%2B=%2b+%&%4=%4g&k=%e2%82%AC",
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&scope=a+b",
            b"&&&",
            b"",
            "caf\u{e9}=\u{1F600}".as_bytes(),
        ] {
            let ours: Vec<(String, String)> = parse(body)
                .unwrap()
                .pairs()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            let reference: Vec<(String, String)> = url::form_urlencoded::parse(body)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, reference, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn rejects_duplicates_bad_utf8_and_floods() {
        assert_eq!(
            parse(b"audience=a&audience=b").unwrap_err(),
            FormError::Duplicated("audience".into())
        );
        assert_eq!(parse(b"a=%ff%fe").unwrap_err(), FormError::NotUtf8);
        assert_eq!(parse(&[b'a', b'=', 0xff]).unwrap_err(), FormError::NotUtf8);
        let flood: Vec<String> = (0..40).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            parse(flood.join("&").as_bytes()).unwrap_err(),
            FormError::TooMany
        );
    }
}
