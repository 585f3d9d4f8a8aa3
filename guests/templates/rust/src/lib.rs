//! {{name}}: `{"text": s}` -> `{"text": S}`. Built by `ionflux build` (Debian's
//! rustc 1.63 for wasm32, then `wasm-tools component new`).

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::{log, Error};

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let text = input.require_str("text")?;
    // Needs the scope emit_log:info; a refusal is an Error::Denied, ignored here.
    let _ = log::write(log::Level::Info, "upper-casing");
    Ok(Value::object([("text", Value::from(text.to_uppercase()))]).to_json())
}

ionflux_pdk::export!(run);
