//! Topic selectors: `*`, an exact topic, or an RFC 6570 URI template a topic must match.
//!
//! They follow the Mercure protocol (draft-dunglas-mercure-07, "Topic Selectors"), which
//! decides whether a string matches a selector in three steps: the selector `*` matches every string; a selector equal to
//! the string matches it (so a template also matches itself, which authorization relies on); a
//! selector that is a valid URI template matches every string the template could expand to.
//! Anything else does not match.
//!
//! A template is compiled once, when the selector is made, into a regular expression from the
//! `regex-lite` crate, whose matching time is linear in the topic's length: a hostile template
//! cannot make matching backtrack. Templates are bounded in length, in expressions and in
//! variables per expression, so compiling one is bounded too.

use std::fmt;

use regex_lite::{Regex, RegexBuilder};

/// The longest selector accepted, in bytes: a quarter of a [`Topic`](crate::Topic)'s limit, so
/// that Mercure's subscription updates, whose topic holds a selector percent-encoded (up to three
/// bytes for one), always have a valid topic.
pub const MAX_SELECTOR_LEN: usize = 256;

/// The most variables one `{…}` expression may list: each adds alternatives to the compiled
/// expression, so the limit bounds its size.
const MAX_VARS_PER_EXPRESSION: usize = 8;

/// Memory allowed for one compiled template, far above what a 256-byte template needs.
const COMPILED_SIZE_LIMIT: usize = 1 << 20;

/// A topic selector: which topics a subscription (or a claim) covers.
///
/// ```
/// use tower_sse_pubsub::Selector;
///
/// let books = Selector::new("https://example.com/books/{id}")?;
/// assert!(books.matches("https://example.com/books/1"));
/// assert!(!books.matches("https://example.com/books/1/reviews"));
/// // A selector always matches itself, template or not.
/// assert!(books.matches("https://example.com/books/{id}"));
///
/// assert!(Selector::new("*")?.matches("anything at all"));
/// assert!(Selector::new("chat")?.matches("chat"));
/// # Ok::<(), tower_sse_pubsub::SelectorError>(())
/// ```
#[derive(Clone)]
pub struct Selector {
    source: Box<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// `*`: every topic.
    Any,
    /// No template expression (or not a valid template): the topic itself.
    Exact,
    /// A URI template with at least one expression.
    Template(Regex),
}

/// Why a string cannot be a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    /// The selector is empty or longer than [`MAX_SELECTOR_LEN`] bytes.
    Length(usize),
    /// The selector contains a control character (U+0000–U+001F, U+007F–U+009F).
    ControlCharacter,
    /// The URI template would compile to a matcher over the size limit (many long prefix
    /// modifiers such as `{a:200}`); refused rather than quietly matched as an exact string.
    TooComplex,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(
                f,
                "a topic selector must be 1..={MAX_SELECTOR_LEN} bytes, got {len}"
            ),
            Self::ControlCharacter => {
                f.write_str("a topic selector must not contain control characters")
            }
            Self::TooComplex => f.write_str(
                "this URI template is too complex to match (too many or too long prefix \
                 modifiers such as {a:200}); use fewer, or leave out the prefix lengths",
            ),
        }
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Reads a selector. Any string of 1 to [`MAX_SELECTOR_LEN`] bytes without control
    /// characters is one: a string that is not a valid URI template (an unclosed `{`, an unknown
    /// operator) is an exact selector, as the protocol says.
    ///
    /// # Errors
    ///
    /// [`SelectorError`] for an empty or too long selector, or one with control characters.
    pub fn new(source: &str) -> Result<Self, SelectorError> {
        if source.is_empty() || source.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::Length(source.len()));
        }
        if source
            .chars()
            .any(|c| c.is_control() || ('\u{7f}'..='\u{9f}').contains(&c))
        {
            return Err(SelectorError::ControlCharacter);
        }
        let kind = if source == "*" {
            Kind::Any
        } else {
            match compile(source) {
                Compiled::Template(regex) => Kind::Template(regex),
                Compiled::NotATemplate => Kind::Exact,
                Compiled::TooLarge => return Err(SelectorError::TooComplex),
            }
        };
        Ok(Self {
            source: source.into(),
            kind,
        })
    }

    /// Whether `topic` matches this selector.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => *self.source == *topic,
            Kind::Template(regex) => *self.source == *topic || regex.is_match(topic),
        }
    }

    /// The selector as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this is the selector `*`, which matches every topic.
    pub fn is_any(&self) -> bool {
        matches!(self.kind, Kind::Any)
    }

    /// Whether this selector is a URI template (with at least one `{…}` expression), as opposed
    /// to `*` or an exact topic.
    pub fn is_template(&self) -> bool {
        matches!(self.kind, Kind::Template(_))
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.source).finish()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

/// The characters RFC 6570 calls unreserved, as a regex class body.
const UNRESERVED: &str = r"A-Za-z0-9\-._~";
/// Unreserved plus reserved (`gen-delims` and `sub-delims`), for `{+var}` and `{#var}`.
const UNRESERVED_OR_RESERVED: &str = r"A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=";

/// How an expression's operator expands (RFC 6570, appendix A).
struct Operator {
    first: &'static str,
    sep: &'static str,
    named: bool,
    if_empty: &'static str,
    allow: &'static str,
}

fn operator(op: Option<char>) -> Option<Operator> {
    let (first, sep, named, if_empty, allow) = match op {
        None => ("", ",", false, "", UNRESERVED),
        Some('+') => ("", ",", false, "", UNRESERVED_OR_RESERVED),
        Some('#') => ("#", ",", false, "", UNRESERVED_OR_RESERVED),
        Some('.') => (".", ".", false, "", UNRESERVED),
        Some('/') => ("/", "/", false, "", UNRESERVED),
        Some(';') => (";", ";", true, "", UNRESERVED),
        Some('?') => ("?", "&", true, "=", UNRESERVED),
        Some('&') => ("&", "&", true, "=", UNRESERVED),
        _ => return None,
    };
    Some(Operator {
        first,
        sep,
        named,
        if_empty,
        allow,
    })
}

/// One variable of an expression: its name, prefix length and explode flag.
struct VarSpec<'a> {
    name: &'a str,
    max_len: Option<u16>,
    explode: bool,
}

/// What compiling a selector as a URI template gave.
enum Compiled {
    Template(Regex),
    /// No expression, or not a valid template: an exact selector.
    NotATemplate,
    /// A valid template whose matcher would be over the size limit.
    TooLarge,
}

/// Compiles a template with at least one expression into an anchored regex.
fn compile(template: &str) -> Compiled {
    match pattern_of(template) {
        None => Compiled::NotATemplate,
        Some(pattern) => RegexBuilder::new(&pattern)
            .size_limit(COMPILED_SIZE_LIMIT)
            .build()
            .map_or(Compiled::TooLarge, Compiled::Template),
    }
}

/// The anchored regex source for a template with at least one expression; `None` when the string
/// has no expression or is not a valid template.
fn pattern_of(template: &str) -> Option<String> {
    let mut pattern = String::from(r"\A");
    let mut rest = template;
    let mut expressions = 0;
    while let Some(open) = rest.find(['{', '}']) {
        let (literal, tail) = rest.split_at(open);
        push_literal(&mut pattern, literal)?;
        if tail.starts_with('}') {
            return None;
        }
        let close = tail.find('}')?;
        push_expression(&mut pattern, &tail[1..close])?;
        expressions += 1;
        rest = &tail[close + 1..];
    }
    push_literal(&mut pattern, rest)?;
    if expressions == 0 {
        return None;
    }
    pattern.push_str(r"\z");
    Some(pattern)
}

/// Appends a literal part, checking it holds only what RFC 6570 allows outside expressions.
fn push_literal(pattern: &mut String, literal: &str) -> Option<()> {
    let bytes = literal.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            // A literal percent sign must start a pct-encoded triplet.
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            i += 3;
            continue;
        }
        if b.is_ascii()
            && (b <= b' ' || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'|'))
        {
            return None;
        }
        i += 1;
    }
    pattern.push_str(&regex_lite::escape(literal));
    Some(())
}

/// Appends the regex for one expression (the text between `{` and `}`).
fn push_expression(pattern: &mut String, body: &str) -> Option<()> {
    let (op, list) = match body.chars().next()? {
        c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(c), &body[1..]),
        // Reserved for future extensions: not a valid template today.
        '=' | ',' | '!' | '@' | '|' => return None,
        _ => (None, body),
    };
    let op = operator(op)?;
    let specs = list.split(',').map(var_spec).collect::<Option<Vec<_>>>()?;
    if specs.is_empty() || specs.len() > MAX_VARS_PER_EXPRESSION {
        return None;
    }
    let specs: Vec<String> = specs.iter().map(|spec| spec_pattern(&op, spec)).collect();
    // Any variable may be undefined, so the expression expands to an ordered subsequence of its
    // variables: the first one present follows `first`, the others `sep`.
    let first = regex_lite::escape(op.first);
    let sep = regex_lite::escape(op.sep);
    pattern.push_str("(?:");
    for (i, head) in specs.iter().enumerate() {
        if i > 0 {
            pattern.push('|');
        }
        pattern.push_str(&first);
        pattern.push_str(head);
        for tail in &specs[i + 1..] {
            pattern.push_str("(?:");
            pattern.push_str(&sep);
            pattern.push_str(tail);
            pattern.push_str(")?");
        }
    }
    pattern.push_str(")?");
    Some(())
}

/// Parses `name`, `name:3` or `name*`.
fn var_spec(spec: &str) -> Option<VarSpec<'_>> {
    let (name, explode, max_len) = if let Some(name) = spec.strip_suffix('*') {
        (name, true, None)
    } else if let Some((name, len)) = spec.split_once(':') {
        let len: u16 = len.parse().ok()?;
        if !(1..10_000).contains(&len) || len.to_string().len() != spec.len() - name.len() - 1 {
            return None;
        }
        (name, false, Some(len))
    } else {
        (spec, false, None)
    };
    let valid_name = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && percent_encoded_ok(name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%'));
    valid_name.then_some(VarSpec {
        name,
        max_len,
        explode,
    })
}

/// Whether every `%` in `name` starts a pct-encoded triplet.
fn percent_encoded_ok(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// The regex for one variable's expansion, without the `first`/`sep` before it.
fn spec_pattern(op: &Operator, spec: &VarSpec<'_>) -> String {
    let value = match spec.max_len {
        // A topic has at most MAX_TOPIC_LEN bytes, so at most that many characters: a longer
        // prefix cannot cut anything, and matching it as unbounded keeps the matcher small.
        Some(max) if usize::from(max) < crate::MAX_TOPIC_LEN => {
            // The prefix counts characters (RFC 6570, 2.4.1): a raw one, or one UTF-8 character
            // pct-encoded in one to four triplets.
            let character = format!(
                "(?:[{}]|%[0-7][0-9A-Fa-f]|%[CDcd][0-9A-Fa-f]{CONT}|%[Ee][0-9A-Fa-f]{CONT}{CONT}\
                 |%[Ff][0-7]{CONT}{CONT}{CONT})",
                op.allow
            );
            format!("{character}{{1,{max}}}")
        }
        _ => format!("(?:[{}]|%[0-9A-Fa-f]{{2}})+", op.allow),
    };
    let name = regex_lite::escape(spec.name);
    if op.named {
        let if_empty = regex_lite::escape(op.if_empty);
        if spec.explode {
            // `name=v1;name=v2` (or `&`), or key=value pairs of an exploded map.
            let item = format!("(?:{value}(?:={value}|{if_empty})?)");
            let sep = regex_lite::escape(op.sep);
            format!("{item}(?:{sep}{item})*")
        } else {
            format!("{name}(?:={value}(?:,{value})*|{if_empty})")
        }
    } else if spec.explode {
        // A list repeats `sep`; an exploded map's pairs are `key=value`.
        let sep = regex_lite::escape(op.sep);
        format!("(?:{value}(?:(?:{sep}|=){value})*)?")
    } else {
        // A list or a map's pairs, comma-separated; `=` is reserved, so it is pct-encoded in a
        // value and never appears raw.
        format!("(?:{value}(?:,{value})*)?")
    }
}

/// A pct-encoded UTF-8 continuation byte.
const CONT: &str = "%[89ABab][0-9A-Fa-f]";

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(template: &str, topic: &str) -> bool {
        Selector::new(template)
            .expect("valid selector")
            .matches(topic)
    }

    #[test]
    fn star_matches_every_topic() {
        let any = Selector::new("*").expect("valid");
        assert!(any.is_any());
        assert!(any.matches("https://example.com/foo"));
        assert!(any.matches("*"));
    }

    #[test]
    fn a_string_without_expressions_is_exact_and_case_sensitive() {
        let exact = Selector::new("https://example.com/foo").expect("valid");
        assert!(!exact.is_template());
        assert!(exact.matches("https://example.com/foo"));
        assert!(!exact.matches("https://example.com/Foo"));
        assert!(!exact.matches("https://example.com/foo/"));
        assert!(!exact.matches("https://example.com/fo"));
    }

    #[test]
    fn an_invalid_template_is_an_exact_selector() {
        for selector in [
            "a{b",
            "a}b",
            "{}",
            "{!x}",
            "{x:0}",
            "{x y}",
            "a {x}",
            "{x:10000}",
        ] {
            let s = Selector::new(selector).expect("valid selector");
            assert!(!s.is_template(), "{selector:?} is not a template");
            assert!(s.matches(selector));
            assert!(!s.matches("ab"));
        }
    }

    #[test]
    fn simple_expansion_matches_one_path_segment() {
        let t = "https://example.com/books/{id}";
        assert!(matches(t, "https://example.com/books/1"));
        assert!(matches(t, "https://example.com/books/abc-._~"));
        assert!(matches(t, "https://example.com/books/a%2Fb"));
        assert!(matches(t, "https://example.com/books/1,2"), "a list");
        assert!(matches(t, "https://example.com/books/"), "an empty value");
        assert!(!matches(t, "https://example.com/books/1/reviews"));
        assert!(!matches(t, "https://example.com/books/a%2"));
        assert!(!matches(t, "https://example.org/books/1"));
        assert!(!matches(t, "prefix https://example.com/books/1"));
    }

    #[test]
    fn the_template_matches_itself() {
        assert!(matches(
            "https://example.com/books/{id}",
            "https://example.com/books/{id}"
        ));
        assert!(!matches(
            "https://example.com/books/{id}",
            "https://example.com/books/{x}"
        ));
    }

    #[test]
    fn reserved_expansion_crosses_segments() {
        let t = "https://example.com/{+path}";
        assert!(matches(t, "https://example.com/books/1/reviews"));
        assert!(matches(t, "https://example.com/a?b=c&d=e"));
        assert!(!matches(t, "https://example.com/a b"));
        assert!(!matches(
            "https://example.com/{path}",
            "https://example.com/books/1"
        ));
    }

    #[test]
    fn fragment_expansion() {
        let t = "https://example.com/page{#section}";
        assert!(matches(t, "https://example.com/page#intro"));
        assert!(matches(t, "https://example.com/page#a/b"));
        assert!(matches(t, "https://example.com/page"), "undefined");
        assert!(!matches(t, "https://example.com/page/intro"));
    }

    #[test]
    fn label_and_path_segment_expansion() {
        assert!(matches(
            "https://example.com/file{.ext}",
            "https://example.com/file.json"
        ));
        assert!(matches(
            "https://example.com/file{.ext}",
            "https://example.com/file"
        ));
        assert!(!matches(
            "https://example.com/file{.ext}",
            "https://example.com/file/json"
        ));
        assert!(matches(
            "https://example.com{/a,b}",
            "https://example.com/x/y"
        ));
        assert!(matches(
            "https://example.com{/a,b}",
            "https://example.com/x"
        ));
        assert!(matches(
            "https://example.com{/list*}",
            "https://example.com/x/y/z"
        ));
        assert!(!matches(
            "https://example.com{/a}",
            "https://example.com/x/y"
        ));
    }

    #[test]
    fn path_parameter_and_query_expansion() {
        assert!(matches(
            "https://example.com/m{;x,y}",
            "https://example.com/m;x=1;y=2"
        ));
        assert!(matches(
            "https://example.com/m{;x,y}",
            "https://example.com/m;x"
        ));
        assert!(matches(
            "https://example.com/s{?q,lang}",
            "https://example.com/s?q=rust&lang=en"
        ));
        assert!(matches(
            "https://example.com/s{?q,lang}",
            "https://example.com/s?lang=en"
        ));
        assert!(matches(
            "https://example.com/s{?q}",
            "https://example.com/s?q="
        ));
        assert!(matches(
            "https://example.com/s{?q}",
            "https://example.com/s"
        ));
        assert!(!matches(
            "https://example.com/s{?q}",
            "https://example.com/s?r=1"
        ));
        assert!(!matches(
            "https://example.com/s{?q,lang}",
            "https://example.com/s?lang=en&q=x"
        ));
        assert!(matches(
            "https://example.com/s?fixed=1{&x}",
            "https://example.com/s?fixed=1&x=2"
        ));
    }

    #[test]
    fn the_specs_private_update_example() {
        // draft-07, "Subscribers": a claim selector that an alternate topic of the update matches.
        let claim = "https://example.com/users/foo/{?topic}";
        let alternate =
            "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1";
        assert!(matches(claim, alternate));
        assert!(!matches(claim, "https://example.com/books/1"));
        assert!(!matches(claim, "https://example.com/users/bar/?topic=x"));
        // And the subscription selector of its example matches the canonical topic.
        assert!(matches(
            "https://example.com/books/{id}",
            "https://example.com/books/1"
        ));
    }

    #[test]
    fn prefix_modifier_bounds_the_value_length() {
        let t = "https://example.com/users/{name:3}";
        assert!(matches(t, "https://example.com/users/ada"));
        assert!(
            matches(t, "https://example.com/users/a%20b"),
            "an encoded char counts once"
        );
        assert!(!matches(t, "https://example.com/users/adam"));
    }

    #[test]
    fn an_unexploded_value_never_holds_a_raw_equals_sign() {
        // `=` is reserved: expansion writes it `%3D` unless a map is exploded.
        assert!(!matches(
            "https://example.com/books/{id}",
            "https://example.com/books/a=b"
        ));
        assert!(matches(
            "https://example.com/books/{id}",
            "https://example.com/books/a%3Db"
        ));
        assert!(!matches(
            "https://example.com{/id}",
            "https://example.com/a=b"
        ));
        assert!(matches(
            "https://example.com{/keys*}",
            "https://example.com/a=b"
        ));
    }

    #[test]
    fn a_prefix_counts_characters_not_octets() {
        // "é" expands as two pct-encoded octets, one character.
        assert!(matches("users/{x:1}", "users/%C3%A9"));
        assert!(matches("users/{x:2}", "users/a%E2%82%AC"));
        assert!(!matches("users/{x:1}", "users/ab"));
        assert!(!matches("users/{x:1}", "users/%C3"), "half a character");
    }

    #[test]
    fn a_long_prefix_is_still_a_template_and_an_oversized_one_is_refused() {
        for template in ["users/{name:9999}", "users/{name:1600}", "s{?q:300}"] {
            let selector = Selector::new(template).expect("valid");
            assert!(selector.is_template(), "{template}");
        }
        assert!(matches("users/{name:9999}", "users/ada"));
        assert!(matches(
            "users/{name:255}",
            &format!("users/{}", "a".repeat(200))
        ));
        // Many long prefixes would make a huge matcher: a clear error, not an exact match.
        let heavy = "{a:250}".repeat(30);
        assert_eq!(Selector::new(&heavy).err(), Some(SelectorError::TooComplex));
    }

    #[test]
    fn several_expressions_and_literals() {
        let t = "https://example.com/users/{user}/books/{book}";
        assert!(matches(t, "https://example.com/users/ada/books/42"));
        assert!(!matches(t, "https://example.com/users/ada/films/42"));
        // Regex metacharacters in literals are literal.
        let t = "https://example.com/a.b+(c)/{x}";
        assert!(matches(t, "https://example.com/a.b+(c)/1"));
        assert!(!matches(t, "https://example.com/aXb+(c)/1"));
    }

    #[test]
    fn non_ascii_literals_match_themselves() {
        let t = "https://example.com/café/{x}";
        assert!(matches(t, "https://example.com/café/1"));
        assert!(!matches(t, "https://example.com/cafe/1"));
    }

    #[test]
    fn control_characters_and_bad_lengths_are_refused() {
        assert_eq!(Selector::new("").err(), Some(SelectorError::Length(0)));
        let long = "a".repeat(MAX_SELECTOR_LEN + 1);
        assert_eq!(
            Selector::new(&long).err(),
            Some(SelectorError::Length(MAX_SELECTOR_LEN + 1))
        );
        for bad in ["a\nb", "a\u{0}b", "a\u{7f}", "a\u{85}b"] {
            assert_eq!(
                Selector::new(bad).err(),
                Some(SelectorError::ControlCharacter)
            );
        }
    }

    #[test]
    fn the_largest_template_compiles_and_matches() {
        // Expressions of the most variables allowed, up to the length limit.
        let vars: Vec<String> = (0..MAX_VARS_PER_EXPRESSION)
            .map(|i| format!("v{i}"))
            .collect();
        let expression = format!("{{/{}}}", vars.join(","));
        let mut template = String::new();
        let mut expressions = 0;
        while template.len() + expression.len() <= MAX_SELECTOR_LEN {
            template.push_str(&expression);
            expressions += 1;
        }
        let selector = Selector::new(&template).expect("valid");
        assert!(selector.is_template());
        let most = expressions * MAX_VARS_PER_EXPRESSION;
        assert!(selector.matches(&"/x".repeat(most)));
        assert!(!selector.matches(&"/x".repeat(most + 1)));
        assert!(!selector.matches(&"/x%".repeat(80)));
        // One more variable and it is no template, just an exact string.
        let vars: Vec<String> = (0..=MAX_VARS_PER_EXPRESSION)
            .map(|i| format!("v{i}"))
            .collect();
        let too_many = Selector::new(&format!("{{/{}}}", vars.join(","))).expect("valid");
        assert!(!too_many.is_template());
    }
}
