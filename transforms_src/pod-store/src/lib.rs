//! `pod-store` (the seeds' `StoreToIONPOD_Transform_IONWALL`):
//! `{"path": "<pod path>", "data": any}` -> `{"cid": ..., "path": ...}`.
//!
//! Stores `data` as compact JSON text through the `pod` import (scope
//! `write_pod_data:<path>`), so `pod-fetch` of the returned CID or path gives
//! `data` back. With `"encode_json": false`, `data` must be a string and is
//! stored as is (the counterpart of pod-fetch's `"parse_json": false`).

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::{pod, Error};

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let path = input.require_str("path")?;
    if path.is_empty() {
        return Err(Error::Invalid("field `path` must not be empty".into()));
    }
    let data = input.require("data")?;
    let text = if input.opt_bool("encode_json", true)? {
        data.to_json()
    } else {
        match data.as_str() {
            Some(s) => s.to_string(),
            None => {
                return Err(Error::Invalid(format!(
                    "field `data` must be a string when `encode_json` is false, got {}",
                    data.type_name()
                )))
            }
        }
    };
    let cid = pod::put(path, &text).map_err(|e| e.context(format!("pod.put({path:?})")))?;
    Ok(Value::object([("cid", Value::from(cid)), ("path", Value::from(path))]).to_json())
}

ionflux_pdk::export!(run);
