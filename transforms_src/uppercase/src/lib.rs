//! `uppercase`: `{"text": s}` -> `{"text": S}`, using Unicode case mapping
//! (so `"straße"` becomes `"STRASSE"`, which may change the length).

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let text = input.require_str("text")?;
    Ok(Value::object([("text", Value::from(text.to_uppercase()))]).to_json())
}

ionflux_pdk::export!(run);
