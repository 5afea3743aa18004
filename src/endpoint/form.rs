//! Strict `application/x-www-form-urlencoded` decoding, for query strings and form bodies.
//!
//! Unlike a lenient decoder, bytes that are not UTF-8 after percent-decoding are an error, never
//! a replacement character: `topic=%FF` must not quietly become a topic named `\u{FFFD}`, which
//! two different requests would then share.

use std::borrow::Cow;
use std::fmt;

/// A name or value that is not UTF-8 once percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotUtf8 {
    /// The field's name, as far as it could be read.
    pub(crate) field: String,
    /// Whether the name was UTF-8 and only the value was not.
    pub(crate) in_value: bool,
}

impl fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {:?} is not valid UTF-8 once percent-decoded",
            self.field
        )
    }
}

/// The `name=value` pairs of `input` in order, names and values decoded (`+` is a space, `%XX`
/// a byte). Empty pairs are skipped; a pair without `=` has an empty value.
pub(crate) fn pairs(input: &[u8]) -> impl Iterator<Item = Result<(String, String), NotUtf8>> + '_ {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name).map_err(|lossy| NotUtf8 {
                field: lossy,
                in_value: false,
            })?;
            let value = decode(value).map_err(|_| NotUtf8 {
                field: name.clone(),
                in_value: true,
            })?;
            Ok((name, value))
        })
}

/// Decodes one name or value; on failure, a lossy rendering for the error message.
fn decode(raw: &[u8]) -> Result<String, String> {
    let plus_as_space: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Result<Vec<(String, String)>, NotUtf8> {
        pairs(input.as_bytes()).collect()
    }

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let decoded = all("topic=room%2F1&topic=a+b&data=caf%C3%A9&&flag").expect("valid form");
        let expected = [
            ("topic", "room/1"),
            ("topic", "a b"),
            ("data", "café"),
            ("flag", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_replacement_character() {
        let error = all("topic=%FF").expect_err("not UTF-8");
        assert_eq!(error.field, "topic");
        assert!(all("%C3=x").is_err());
        // A literal, correctly encoded U+FFFD is fine.
        assert_eq!(all("topic=%EF%BF%BD").expect("valid form")[0].1, "\u{FFFD}");
    }
}
