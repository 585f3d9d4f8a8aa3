//! `text-stats`: `{"text": s}` -> `{"chars", "words", "lines", "bytes"}`.
//!
//! * `chars`: Unicode scalar values (what Python's `len(s)` counts);
//! * `words`: runs of non-whitespace separated by Unicode whitespace;
//! * `lines`: lines as an editor shows them: a final line counts even without
//!   a newline, a trailing newline does not open another one, `""` has 0
//!   (`"a\nb"` and `"a\nb\n"` both have 2); `\r\n` counts as one break;
//! * `bytes`: length of the UTF-8 encoding.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let text = input.require_str("text")?;
    Ok(Value::object([
        ("chars", Value::from(text.chars().count())),
        ("words", Value::from(text.split_whitespace().count())),
        ("lines", Value::from(text.lines().count())),
        ("bytes", Value::from(text.len())),
    ])
    .to_json())
}

ionflux_pdk::export!(run);
