//! `pod-fetch` (the seeds' `FetchFromIONPOD_Transform_IONWALL`):
//! `{"reference": "<CID or pod path>", "parse_json": true}` -> `{"data": ..., "reference": ..., "cid"?: ...}`.
//!
//! Reads one text object through the `pod` import (scope
//! `read_pod_data:<reference>`). With `parse_json` (the default) the object
//! must be JSON and `data` is the parsed value; with `"parse_json": false`
//! `data` is the text. `cid` is present when the reference itself is a CID
//! (the pod API does not report the CID a path resolves to).

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::{pod, Error};

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let reference = input.require_str("reference")?;
    if reference.is_empty() {
        return Err(Error::Invalid("field `reference` must not be empty".into()));
    }
    let parse_json = input.opt_bool("parse_json", true)?;
    let text = pod::get(reference).map_err(|e| e.context(format!("pod.get({reference:?})")))?;
    let data = if parse_json {
        json::parse(&text).map_err(|e| {
            Error::Invalid(format!(
                "pod object {reference:?} is not JSON ({e}); pass \"parse_json\": false to read it as text"
            ))
        })?
    } else {
        Value::from(text)
    };
    let mut out = vec![("data", data), ("reference", Value::from(reference))];
    if looks_like_cid(reference) {
        out.push(("cid", Value::from(reference)));
    }
    Ok(Value::object(out).to_json())
}

/// CIDv1 in base32 (`b` + lower-case base32, as Kubo prints them) or CIDv0
/// (`Qm` + 44 base58 characters). Pod paths never match: they are expected
/// to contain a `/` or an extension, and a bare 46+ character base32 name
/// that is not a CID would be a strange path.
fn looks_like_cid(reference: &str) -> bool {
    let b = reference.as_bytes();
    let v1 = b.len() >= 50
        && b[0] == b'b'
        && b[1..].iter().all(|c| matches!(c, b'a'..=b'z' | b'2'..=b'7'));
    let v0 = b.len() == 46
        && reference.starts_with("Qm")
        && b.iter().all(|c| c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l'));
    v1 || v0
}

ionflux_pdk::export!(run);
