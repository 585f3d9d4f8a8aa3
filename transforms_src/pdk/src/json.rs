//! A small JSON value type, parser and compact serializer.
//!
//! Transforms speak JSON text on both sides of `run`. serde_json would work
//! but roughly triples a module's size, and modules are content-addressed
//! artifacts that every host fetches and compiles, so the SDK carries this
//! instead. Two choices differ from serde_json's defaults on purpose:
//!
//! * objects keep their keys in input order (a transform that passes data
//!   through should not reorder it); on a duplicate key the last one wins for
//!   lookups, as in most parsers, and both are kept on output;
//! * numbers keep their source text, so integers beyond 2^53 and decimals
//!   pass through a transform unchanged.
//!
//! The parser follows RFC 8259 strictly (no trailing commas, comments, NaN,
//! lone surrogates or raw control characters) and limits nesting depth so a
//! hostile input cannot exhaust the guest's stack.

use crate::Error;
use std::fmt;

/// Deepest array/object nesting `parse` accepts (serde_json uses the same).
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    /// Members in input order; see the module docs for duplicate keys.
    Object(Vec<(String, Value)>),
}

/// A JSON number, kept as its (validated) source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number(String);

impl Number {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as u64 if it is a non-negative integer (`3`, `3.0`, `3e2`).
    pub fn as_u64(&self) -> Option<u64> {
        if let Ok(n) = self.0.parse::<u64>() {
            return Some(n);
        }
        let f = self.as_f64();
        // Above 2^53 a float no longer names one integer.
        if f.is_finite() && f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) {
            Some(f as u64)
        } else {
            None
        }
    }

    /// The value as i64 if it is an integer (see `as_u64`).
    pub fn as_i64(&self) -> Option<i64> {
        if let Ok(n) = self.0.parse::<i64>() {
            return Some(n);
        }
        let f = self.as_f64();
        if f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
            Some(f as i64)
        } else {
            None
        }
    }

    pub fn as_f64(&self) -> f64 {
        // Validated JSON number text is always valid Rust float syntax.
        self.0.parse::<f64>().unwrap_or(f64::NAN)
    }
}

impl Value {
    /// Builds an object from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(members: I) -> Value {
        Value::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Member `key` of an object (the last one if repeated); `None` for a
    /// missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_number().and_then(Number::as_u64)
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_number().and_then(Number::as_i64)
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Vec<(String, Value)>> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The JSON Schema name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Required string member: `Error::Invalid` naming the field otherwise.
    pub fn require_str(&self, field: &str) -> Result<&str, Error> {
        match self.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::Invalid(format!(
                "field `{field}` must be a string, got {}",
                other.type_name()
            ))),
            None => Err(Error::Invalid(format!("field `{field}` is required (a string)"))),
        }
    }

    /// Required member of any type (including `null`).
    pub fn require(&self, field: &str) -> Result<&Value, Error> {
        self.get(field)
            .ok_or_else(|| Error::Invalid(format!("field `{field}` is required")))
    }

    /// Optional string member: absent or `null` gives `None`.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, Error> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::Invalid(format!(
                "field `{field}` must be a string, got {}",
                other.type_name()
            ))),
        }
    }

    /// Optional boolean member: absent or `null` gives `default`.
    pub fn opt_bool(&self, field: &str, default: bool) -> Result<bool, Error> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::Invalid(format!(
                "field `{field}` must be a boolean, got {}",
                other.type_name()
            ))),
        }
    }

    /// Optional non-negative integer member: absent or `null` gives `None`.
    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::Invalid(format!(
                    "field `{field}` must be a non-negative integer, got {}",
                    describe(v)
                ))
            }),
        }
    }

    /// Compact JSON text (also what `Display`/`to_string` give).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends compact JSON text to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => out.push_str(&n.0),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

/// A short description of a value for error messages: its type, and the
/// value itself when that is short.
fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("number {}", n.0),
        other => other.type_name().to_string(),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Number(Number(n.to_string()))
    }
}

impl From<f64> for Value {
    /// Non-finite floats have no JSON form and become `null`, as in
    /// JavaScript's JSON.stringify.
    fn from(f: f64) -> Value {
        if f.is_finite() {
            // Rust prints the shortest text that round-trips, never with an
            // exponent, so it is always a valid JSON number.
            Value::Number(Number(format!("{f}")))
        } else {
            Value::Null
        }
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escapes are ASCII, so `i` is always a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Why a text is not JSON, and where (byte offset into the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

/// Parses one JSON value (surrounding whitespace allowed, nothing else).
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser { text, bytes: text.as_bytes(), pos: 0 };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// Parses `run`'s input, which every standard transform requires to be a
/// JSON object; failures are `Error::Invalid`.
pub fn parse_input(text: &str) -> Result<Value, Error> {
    match parse(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(Error::Invalid(format!(
            "input must be a JSON object, got {}",
            other.type_name()
        ))),
        Err(e) => Err(Error::Invalid(format!("input is not valid JSON: {e}"))),
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: &str) -> ParseError {
        ParseError { message: message.to_string(), offset: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("nesting too deep"));
                }
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    self.skip_ws();
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.err("expected `,` or `]` in array")),
                    }
                }
            }
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("nesting too deep"));
                }
                self.pos += 1;
                let mut members = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key in object"));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected `:` after object key"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    let value = self.value(depth + 1)?;
                    members.push((key, value));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Object(members));
                        }
                        _ => return Err(self.err("expected `,` or `}` in object")),
                    }
                }
            }
            Some(_) => Err(self.err("expected a JSON value")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: expected digits in exponent"));
            }
        }
        Ok(Value::Number(Number(self.text[start..self.pos].to_string())))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            n = n * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(n)
    }

    /// Parses a string literal; `pos` is at the opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        let mut start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    out.push_str(&self.text[start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    // Every split point is an ASCII byte, so slices stay on
                    // char boundaries of the (valid UTF-8) input.
                    out.push_str(&self.text[start..self.pos]);
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let escape_at = self.pos - 2;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(ParseError {
                                        message: "lone surrogate in \\u escape".to_string(),
                                        offset: escape_at,
                                    });
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(ParseError {
                                        message: "lone surrogate in \\u escape".to_string(),
                                        offset: escape_at,
                                    });
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => {
                                    return Err(ParseError {
                                        message: "lone surrogate in \\u escape".to_string(),
                                        offset: escape_at,
                                    })
                                }
                            }
                            start = self.pos;
                            continue;
                        }
                        _ => return Err(self.err("invalid escape in string")),
                    };
                    out.push(c);
                    self.pos += 1;
                    start = self.pos;
                }
                Some(0x00..=0x1f) => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        parse(text).unwrap().to_json()
    }

    #[test]
    fn scalars() {
        assert_eq!(roundtrip(" null "), "null");
        assert_eq!(roundtrip("true"), "true");
        assert_eq!(roundtrip("false"), "false");
        assert_eq!(roundtrip("-0.5e+10"), "-0.5e+10");
        assert_eq!(roundtrip("123456789012345678901234567890"), "123456789012345678901234567890");
        assert_eq!(roundtrip("\"a\\u00e9\\ud83d\\ude00\\n\""), "\"aé😀\\n\"");
    }

    #[test]
    fn containers_keep_order() {
        assert_eq!(roundtrip("{ \"b\": 1, \"a\": [1, {\"c\": null}, []], \"z\": {} }"), "{\"b\":1,\"a\":[1,{\"c\":null},[]],\"z\":{}}");
        let v = parse("{\"k\": 1, \"k\": 2}").unwrap();
        assert_eq!(v.get("k").and_then(Value::as_u64), Some(2));
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "", "nul", "01", "1.", ".5", "1e", "+1", "[1,]", "{\"a\":1,}", "{a:1}", "\"abc",
            "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"tab\there\"", "[1] x", "NaN", "'a'",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep).unwrap_err().message, "nesting too deep");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn escapes_control_characters() {
        let v = Value::from("q\"b\\s/\u{1}\u{7f}é\u{8}\u{c}\r\t");
        assert_eq!(v.to_json(), "\"q\\\"b\\\\s/\\u0001\u{7f}é\\b\\f\\r\\t\"");
        assert_eq!(parse(&v.to_json()).unwrap(), v);
    }

    #[test]
    fn numbers() {
        let n = |s: &str| parse(s).unwrap();
        assert_eq!(n("3").as_u64(), Some(3));
        assert_eq!(n("3.0").as_u64(), Some(3));
        assert_eq!(n("1e3").as_u64(), Some(1000));
        assert_eq!(n("-1").as_u64(), None);
        assert_eq!(n("-1").as_i64(), Some(-1));
        assert_eq!(n("1.5").as_u64(), None);
        assert_eq!(n("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(Value::from(0.1f64 + 0.2).to_json(), "0.30000000000000004");
        assert_eq!(Value::from(f64::NAN), Value::Null);
    }

    #[test]
    fn field_errors_name_the_field() {
        let v = parse_input("{\"text\": 3}").unwrap();
        assert_eq!(
            v.require_str("text").unwrap_err(),
            Error::Invalid("field `text` must be a string, got number".to_string())
        );
        assert!(v.require_str("other").unwrap_err().message().contains("`other`"));
        assert!(matches!(parse_input("[1]"), Err(Error::Invalid(_))));
        assert!(matches!(parse_input("{"), Err(Error::Invalid(_))));
    }
}
