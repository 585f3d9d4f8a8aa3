//! `json-path`: `{"data": any, "path": "a.b[0].c"}` -> `{"value": ...}`.
//!
//! The path language is a subset of JMESPath:
//!
//! | syntax          | meaning                                                  |
//! | --------------- | -------------------------------------------------------- |
//! | `` (empty), `@` | the whole of `data`                                       |
//! | `name`, `.name` | member of an object; a name is any run of characters     |
//! |                 | other than `. [ ] "` and whitespace (`a-b`, `x:y`, `$ref`)|
//! | `"any key"`     | a member whose name needs quoting (JSON string syntax),  |
//! |                 | also `["any key"]`                                        |
//! | `[2]`, `[-1]`   | array element; negative indexes count from the end       |
//! | `[*]`           | projection over an array: the rest of the path applies to |
//! |                 | every element, and the results form an array             |
//! | `.*`, `*`       | projection over an object's member values                |
//!
//! As in JMESPath, a path that does not match (missing key, index out of
//! range, wrong type) yields `null` rather than an error, and projections
//! drop elements whose result is `null`; nested projections give nested
//! arrays (there is no flatten operator). A leading `$` or `$.` is accepted
//! for people used to JSONPath. A malformed path is `invalid`.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(i64),
    /// `[*]`
    EachElement,
    /// `.*`
    EachValue,
}

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let data = input.require("data")?;
    let path = input.require_str("path")?;
    let segments = parse_path(path)
        .map_err(|e| Error::Invalid(format!("field `path` is not a valid path: {e}")))?;
    let value = eval(data, &segments).unwrap_or(Value::Null);
    Ok(Value::object([("value", value)]).to_json())
}

fn eval(value: &Value, path: &[Segment]) -> Option<Value> {
    let (first, rest) = match path.split_first() {
        Some(split) => split,
        None => return Some(value.clone()),
    };
    match first {
        Segment::Key(key) => value.get(key).and_then(|v| eval(v, rest)),
        Segment::Index(i) => {
            let items = value.as_array()?;
            let index = if *i < 0 { items.len() as i64 + i } else { *i };
            if index < 0 {
                return None;
            }
            items.get(index as usize).and_then(|v| eval(v, rest))
        }
        Segment::EachElement => Some(project(value.as_array()?.iter(), rest)),
        Segment::EachValue => Some(project(value.as_object()?.iter().map(|(_, v)| v), rest)),
    }
}

fn project<'a>(items: impl Iterator<Item = &'a Value>, rest: &[Segment]) -> Value {
    Value::Array(
        items
            .filter_map(|item| eval(item, rest))
            .filter(|v| !v.is_null())
            .collect(),
    )
}

fn is_name_byte(b: u8) -> bool {
    !matches!(b, b'.' | b'[' | b']' | b'"' | b' ' | b'\t' | b'\n' | b'\r')
}

/// Parses a path; errors say what was expected and at which character.
fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let bytes = path.as_bytes();
    let mut pos = 0;
    let mut segments = Vec::new();
    if path.is_empty() || path == "@" || path == "$" {
        return Ok(segments);
    }
    // `$.a` / `$[0]` (JSONPath habit) and `@.a` mean the same as `a` / `[0]`.
    if bytes.len() > 1 && (bytes[0] == b'$' || bytes[0] == b'@') && matches!(bytes[1], b'.' | b'[') {
        pos = if bytes[1] == b'.' { 2 } else { 1 };
    }
    let mut first = true;
    while pos < bytes.len() {
        match bytes[pos] {
            b'[' => {
                pos += 1;
                let (segment, next) = bracket(path, pos)?;
                segments.push(segment);
                pos = next;
            }
            b'.' if first => return Err(format!("unexpected `.` at character {pos}")),
            b'.' => {
                pos += 1;
                let (segment, next) = member(path, pos)?;
                segments.push(segment);
                pos = next;
            }
            _ if first => {
                let (segment, next) = member(path, pos)?;
                segments.push(segment);
                pos = next;
            }
            _ => return Err(format!("expected `.` or `[` at character {pos}")),
        }
        first = false;
    }
    Ok(segments)
}

/// After a `.` (or at the start): `name`, `"quoted"` or `*`.
fn member(path: &str, start: usize) -> Result<(Segment, usize), String> {
    let bytes = path.as_bytes();
    if bytes.get(start) == Some(&b'"') {
        let (key, next) = quoted(path, start)?;
        return Ok((Segment::Key(key), next));
    }
    let mut end = start;
    while end < bytes.len() && is_name_byte(bytes[end]) {
        end += 1;
    }
    match &path[start..end] {
        "" => Err(format!("expected a member name at character {start}")),
        "*" => Ok((Segment::EachValue, end)),
        name => Ok((Segment::Key(name.to_string()), end)),
    }
}

/// After a `[`: `*]`, `"quoted"]` or `integer]`.
fn bracket(path: &str, start: usize) -> Result<(Segment, usize), String> {
    let bytes = path.as_bytes();
    let close = |at: usize| -> Result<usize, String> {
        if bytes.get(at) == Some(&b']') {
            Ok(at + 1)
        } else {
            Err(format!("expected `]` at character {at}"))
        }
    };
    match bytes.get(start) {
        Some(b'*') => Ok((Segment::EachElement, close(start + 1)?)),
        Some(b'"') => {
            let (key, next) = quoted(path, start)?;
            Ok((Segment::Key(key), close(next)?))
        }
        Some(b']') => Err(format!(
            "empty `[]` at character {start} (flattening is not supported; use `[*]`)"
        )),
        _ => {
            let mut end = start;
            if bytes.get(end) == Some(&b'-') {
                end += 1;
            }
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            let index = path[start..end]
                .parse::<i64>()
                .map_err(|_| format!("expected an index, `*` or a quoted key at character {start}"))?;
            Ok((Segment::Index(index), close(end)?))
        }
    }
}

/// A JSON string literal starting at `start` (a `"`): (decoded, end).
fn quoted(path: &str, start: usize) -> Result<(String, usize), String> {
    let bytes = path.as_bytes();
    let mut end = start + 1;
    while end < bytes.len() && bytes[end] != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    if end >= bytes.len() {
        return Err(format!("unterminated quoted name starting at character {start}"));
    }
    match json::parse(&path[start..=end]) {
        Ok(Value::String(s)) => Ok((s, end + 1)),
        _ => Err(format!("invalid quoted name starting at character {start}")),
    }
}

ionflux_pdk::export!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn query(data: &str, path: &str) -> String {
        let data = json::parse(data).unwrap();
        eval(&data, &parse_path(path).unwrap()).unwrap_or(Value::Null).to_json()
    }

    #[test]
    fn paths() {
        let doc = r#"{"a": {"b": [{"c": 1}, {"c": 2}, {"d": 3}]}, "x y": {"z.w": true}, "n": null}"#;
        assert_eq!(query(doc, "a.b[0].c"), "1");
        assert_eq!(query(doc, "a.b[-1].d"), "3");
        assert_eq!(query(doc, "a.b[3]"), "null");
        assert_eq!(query(doc, "a.b[*].c"), "[1,2]");
        assert_eq!(query(doc, "\"x y\".\"z.w\""), "true");
        assert_eq!(query(doc, "[\"x y\"][\"z.w\"]"), "true");
        assert_eq!(query(doc, "$.a.b[1]"), "{\"c\":2}");
        assert_eq!(query(doc, "*.b"), "[[{\"c\":1},{\"c\":2},{\"d\":3}]]");
        assert_eq!(query(doc, ""), json::parse(doc).unwrap().to_json());
        assert_eq!(query(doc, "a.missing.deeper"), "null");
        assert_eq!(query("[[1,2],[3]]", "[*][0]"), "[1,3]");
        assert_eq!(query("[[1,2],[3]]", "[*][*]"), "[[1,2],[3]]");
    }

    #[test]
    fn bad_paths() {
        for bad in [".a", "a..b", "a[", "a[x]", "a[]", "a b", "\"a", "a.\"b"] {
            assert!(parse_path(bad).is_err(), "accepted {bad:?}");
        }
    }
}
