//! `http-request`: one outbound HTTP request through the `http` import
//! (scope `http_fetch:<host>`).
//!
//! Input: `{"method": "GET", "url": "...", "headers": {...}, "body": ...,
//! "timeout_ms": 5000, "parse_json": false}`; only `url` is required.
//!
//! * `headers`: an object `{"name": "value"}` or a list of
//!   `{"name": ..., "value": ...}` (for repeated names).
//! * `body`: a string is sent as is; any other JSON value (not `null`) is
//!   sent as compact JSON with `content-type: application/json` unless a
//!   content-type header is given.
//!
//! Output: `{"status": 200, "headers": {...}, "body": "..."}`. Header names
//! are lower-cased and repeated ones joined with `", "` (RFC 9110 §5.3). With
//! `"parse_json": true` the body must be JSON and is returned parsed. A 4xx
//! or 5xx status is a normal result; import errors (denied, bad URL,
//! unreachable, too large) are returned as `run`'s error with the same case.

use ionflux_pdk::http::{self, Header, Request};
use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let url = input.require_str("url")?.to_string();
    let method = input.opt_str("method")?.unwrap_or("GET").to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Error::Invalid(format!("field `method` is not an HTTP method: {method:?}")));
    }
    let mut headers = parse_headers(input.get("headers"))?;
    let body = match input.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            if !headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-type")) {
                headers.push(Header { name: "content-type".into(), value: "application/json".into() });
            }
            Some(other.to_json())
        }
    };
    let timeout_ms = match input.opt_u64("timeout_ms")? {
        None => None,
        Some(ms) if ms <= u64::from(u32::MAX) => Some(ms as u32),
        Some(ms) => return Err(Error::Invalid(format!("field `timeout_ms` is too large: {ms}"))),
    };
    let parse_json = input.opt_bool("parse_json", false)?;

    let what = format!("http.fetch({method} {url})");
    let request = Request { method, url, headers, body, timeout_ms };
    let response = http::fetch(&request).map_err(|e| e.context(&what))?;

    let body = if parse_json {
        json::parse(&response.body).map_err(|e| {
            Error::Invalid(format!("{what}: response body is not JSON ({e})"))
        })?
    } else {
        Value::from(response.body)
    };
    Ok(Value::object([
        ("status", Value::from(u32::from(response.status))),
        ("headers", merge_headers(response.headers)),
        ("body", body),
    ])
    .to_json())
}

fn parse_headers(value: Option<&Value>) -> Result<Vec<Header>, Error> {
    let bad = |what: &str| Error::Invalid(format!("field `headers` {what}"));
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(members)) => members
            .iter()
            .map(|(name, value)| match value.as_str() {
                Some(v) => Ok(Header { name: name.clone(), value: v.to_string() }),
                None => Err(bad(&format!("value of {name:?} must be a string"))),
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match (item.get("name").and_then(Value::as_str), item.get("value").and_then(Value::as_str)) {
                (Some(name), Some(value)) => Ok(Header { name: name.to_string(), value: value.to_string() }),
                _ => Err(bad("items must be {\"name\": string, \"value\": string}")),
            })
            .collect(),
        Some(other) => Err(bad(&format!("must be an object or a list, got {}", other.type_name()))),
    }
}

fn merge_headers(headers: Vec<Header>) -> Value {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for Header { name, value } in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    Value::object(merged.into_iter().map(|(n, v)| (n, Value::from(v))))
}

ionflux_pdk::export!(run);
