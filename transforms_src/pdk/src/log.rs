//! `ionflux:transform/log`. Scope: `emit_log:<level>`.

use crate::abi::{self, raw, RetArea};
use crate::Error;

/// WIT `enum level`, in declaration order (the order is the discriminant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    /// Parses the WIT spelling (`debug`, `info`, `warn`, `error`).
    pub fn parse(name: &str) -> Option<Level> {
        match name {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// Writes one log line. The host may refuse (`denied`) or cap its size
/// (`too-large`); a transform that logs only for diagnostics can ignore that.
pub fn write(level: Level, message: &str) -> Result<(), Error> {
    abi::require_host("log.write")?;
    let mut area = RetArea::new();
    // SAFETY: arguments point into live memory for the duration of the call;
    // the host writes a `result<_, error>` into `area`.
    unsafe {
        raw::log_write(level as i32, message.as_ptr(), message.len(), area.ptr());
        match area.take_error() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
