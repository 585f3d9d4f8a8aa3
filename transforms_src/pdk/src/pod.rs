//! `ionflux:transform/pod`: IONPOD, the content-addressed store.
//! Scopes: `read_pod_data:<path or CID>`, `write_pod_data:<path>`.

use crate::abi::{self, raw, RetArea};
use crate::Error;

/// Reads a text object by CID (`bafk…`) or by pod path (`reports/01.json`).
pub fn get(reference: &str) -> Result<String, Error> {
    abi::require_host("pod.get")?;
    let mut area = RetArea::new();
    // SAFETY: `reference` is live for the call; the host writes a
    // `result<string, error>` into `area`.
    unsafe {
        raw::pod_get(reference.as_ptr(), reference.len(), area.ptr());
        match area.take_error() {
            Some(err) => Err(err),
            None => Ok(area.take_string(4)),
        }
    }
}

/// Stores text under a pod path and returns its CID.
pub fn put(path: &str, data: &str) -> Result<String, Error> {
    abi::require_host("pod.put")?;
    let mut area = RetArea::new();
    // SAFETY: as in `get`.
    unsafe {
        raw::pod_put(path.as_ptr(), path.len(), data.as_ptr(), data.len(), area.ptr());
        match area.take_error() {
            Some(err) => Err(err),
            None => Ok(area.take_string(4)),
        }
    }
}
