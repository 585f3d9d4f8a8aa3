//! Test guest `all-imports`: calls exactly one import, chosen by the input,
//! and reports what it answered, so the host's tests can drive every import
//! through the IONWALL gate and see the typed result the guest received.
//!
//! Input: `{"call": <name>, ...arguments, "repeat"?: N}`
//!
//! | call      | arguments                                                   | ok value             |
//! | --------- | ----------------------------------------------------------- | -------------------- |
//! | `log`     | `level` (`debug`/`info`/`warn`/`error`), `message`          | `null`               |
//! | `config`  | `key`                                                       | string or `null`     |
//! | `pod-get` | `reference`                                                 | the text             |
//! | `pod-put` | `path`, `data` (string)                                     | the CID              |
//! | `bus`     | `subject`, `payload` (string)                               | `null`               |
//! | `http`    | `url`, `method`? (GET), `headers`? (list of `{name, value}`), | `{"status", "headers": [{name, value}], "body"}` |
//! |           | `body`? (string or null), `timeout_ms`? (u32 or null)       |                      |
//!
//! Output: `{"ok": <value>}` when the import succeeded, or
//! `{"error": {"case": "denied" | "not-found" | ..., "message": "..."}}` when it
//! answered an error: import errors are data here, not `run` errors. `repeat`
//! (default 1) calls the import N times (for gate benchmarks) and reports the
//! last answer, stopping at the first error. Malformed input is `run`'s
//! `invalid` error.

use ionflux_pdk::http::{Header, Request};
use ionflux_pdk::json::{self, Value};
use ionflux_pdk::{bus, config, http, log, pod, Error};

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let call = input.require_str("call")?;
    let repeat = input.opt_u64("repeat")?.unwrap_or(1).max(1);
    let mut answer = Ok(Value::Null);
    for _ in 0..repeat {
        answer = call_once(call, &input)?;
        if answer.is_err() {
            break;
        }
    }
    Ok(match answer {
        Ok(value) => Value::object([("ok", value)]),
        Err(err) => Value::object([(
            "error",
            Value::object([("case", Value::from(err.case())), ("message", Value::from(err.message()))]),
        )]),
    }
    .to_json())
}

/// Outer `Result`: the input was malformed. Inner: what the import answered.
fn call_once(call: &str, input: &Value) -> Result<Result<Value, Error>, Error> {
    Ok(match call {
        "log" => {
            let level = input.require_str("level")?;
            let level = log::Level::parse(level).ok_or_else(|| {
                Error::Invalid(format!("field `level` must be debug, info, warn or error, got {level:?}"))
            })?;
            log::write(level, input.require_str("message")?).map(|()| Value::Null)
        }
        "config" => config::get(input.require_str("key")?).map(|v| v.map_or(Value::Null, Value::from)),
        "pod-get" => pod::get(input.require_str("reference")?).map(Value::from),
        "pod-put" => pod::put(input.require_str("path")?, input.require_str("data")?).map(Value::from),
        "bus" => bus::publish(input.require_str("subject")?, input.require_str("payload")?).map(|()| Value::Null),
        "http" => http::fetch(&http_request(input)?).map(|r| {
            Value::object([
                ("status", Value::from(u32::from(r.status))),
                ("headers", Value::Array(r.headers.into_iter().map(header_value).collect())),
                ("body", Value::from(r.body)),
            ])
        }),
        other => {
            return Err(Error::Invalid(format!(
                "field `call` must be log, config, pod-get, pod-put, bus or http, got {other:?}"
            )))
        }
    })
}

fn http_request(input: &Value) -> Result<Request, Error> {
    let headers = match input.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|h| Ok(Header { name: h.require_str("name")?.to_string(), value: h.require_str("value")?.to_string() }))
            .collect::<Result<_, Error>>()
            .map_err(|e| e.context("field `headers`"))?,
        Some(other) => {
            return Err(Error::Invalid(format!("field `headers` must be a list, got {}", other.type_name())))
        }
    };
    let timeout_ms = match input.opt_u64("timeout_ms")? {
        None => None,
        Some(ms) => Some(u32::try_from(ms).map_err(|_| Error::Invalid(format!("field `timeout_ms` is too large: {ms}")))?),
    };
    Ok(Request {
        method: input.opt_str("method")?.unwrap_or("GET").to_string(),
        url: input.require_str("url")?.to_string(),
        headers,
        body: input.opt_str("body")?.map(str::to_string),
        timeout_ms,
    })
}

fn header_value(h: Header) -> Value {
    Value::object([("name", Value::from(h.name)), ("value", Value::from(h.value))])
}

ionflux_pdk::export!(run);
