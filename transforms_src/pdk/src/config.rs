//! `ionflux:transform/config`: values the owner configured for this
//! transform. Scope: `read_config:<key>`.

use crate::abi::{self, raw, RetArea};
use crate::Error;

/// Returns the configured value, or `None` when the key is not set.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    abi::require_host("config.get")?;
    let mut area = RetArea::new();
    // SAFETY: `key` is live for the call; the host writes a
    // `result<option<string>, error>` into `area` (option disc @4, string @8).
    unsafe {
        raw::config_get(key.as_ptr(), key.len(), area.ptr());
        if let Some(err) = area.take_error() {
            return Err(err);
        }
        match area.u8(4) {
            0 => Ok(None),
            1 => Ok(Some(area.take_string(8))),
            other => Err(Error::Failed(format!("config.get: host returned option discriminant {other}"))),
        }
    }
}
