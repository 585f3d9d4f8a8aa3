//! `ionflux:transform/bus`: the message bus (NATS).
//! Scope: `publish_nats_topic:<subject>`.

use crate::abi::{self, raw, RetArea};
use crate::Error;

/// Publishes `payload` on `subject`.
pub fn publish(subject: &str, payload: &str) -> Result<(), Error> {
    abi::require_host("bus.publish")?;
    let mut area = RetArea::new();
    // SAFETY: arguments are live for the call; the host writes a
    // `result<_, error>` into `area`.
    unsafe {
        raw::bus_publish(subject.as_ptr(), subject.len(), payload.as_ptr(), payload.len(), area.ptr());
        match area.take_error() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
