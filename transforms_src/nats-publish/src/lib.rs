//! `nats-publish` (the seeds' `IPC_NATS_Publish_Transform`):
//! `{"subject": "...", "payload": any}` -> `{"published": true, "subject": ...}`.
//!
//! Publishes `payload` as compact JSON text through the `bus` import (scope
//! `publish_nats_topic:<subject>`); a string payload is therefore sent with
//! its quotes. With `"encode_json": false`, `payload` must be a string and is
//! sent as is.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::{bus, Error};

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let subject = input.require_str("subject")?;
    // NATS subjects are dot-separated tokens without whitespace, and one
    // cannot publish to a wildcard; catching a bad one here gives a better
    // message than the bus would.
    if subject.is_empty()
        || subject.split('.').any(|t| t.is_empty() || t == "*" || t == ">")
        || subject.chars().any(char::is_whitespace)
    {
        return Err(Error::Invalid(format!(
            "field `subject` is not a valid NATS subject: {subject:?}"
        )));
    }
    let payload = input.require("payload")?;
    let text = if input.opt_bool("encode_json", true)? {
        payload.to_json()
    } else {
        match payload.as_str() {
            Some(s) => s.to_string(),
            None => {
                return Err(Error::Invalid(format!(
                    "field `payload` must be a string when `encode_json` is false, got {}",
                    payload.type_name()
                )))
            }
        }
    };
    bus::publish(subject, &text).map_err(|e| e.context(format!("bus.publish({subject:?})")))?;
    Ok(Value::object([("published", Value::from(true)), ("subject", Value::from(subject))]).to_json())
}

ionflux_pdk::export!(run);
