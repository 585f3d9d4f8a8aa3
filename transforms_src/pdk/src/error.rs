use std::fmt;

/// Mirror of the WIT variant `ionflux:transform/types.error`, in case order
/// (the order is the canonical-ABI discriminant, see `Error::discriminant`).
/// Every payload is a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// IONWALL refused the call: the message names the scope and the reason.
    Denied(String),
    /// The thing asked for does not exist (a CID, a pod path, a config key).
    NotFound(String),
    /// The arguments were malformed (a bad CID, a bad URL, input not JSON).
    Invalid(String),
    /// A size limit of the call was exceeded.
    TooLarge(String),
    /// The capability exists but cannot be reached now (no bus, network down).
    Unavailable(String),
    /// Anything else; the message says what.
    Failed(String),
}

impl Error {
    /// The WIT case name (`denied`, `not-found`, ...), as the host names it.
    pub fn case(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::NotFound(_) => "not-found",
            Error::Invalid(_) => "invalid",
            Error::TooLarge(_) => "too-large",
            Error::Unavailable(_) => "unavailable",
            Error::Failed(_) => "failed",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Invalid(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Failed(m) => m,
        }
    }

    /// Prefixes the message with what the transform was doing, keeping the
    /// case, so that `run`'s caller sees both which step failed and why the
    /// host refused it: `pod.get("a/b.json"): denied by IONWALL ...`.
    pub fn context(self, what: impl fmt::Display) -> Error {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            Error::Denied(m) => Error::Denied(wrap(m)),
            Error::NotFound(m) => Error::NotFound(wrap(m)),
            Error::Invalid(m) => Error::Invalid(wrap(m)),
            Error::TooLarge(m) => Error::TooLarge(wrap(m)),
            Error::Unavailable(m) => Error::Unavailable(wrap(m)),
            Error::Failed(m) => Error::Failed(wrap(m)),
        }
    }

    pub(crate) fn discriminant(&self) -> u8 {
        match self {
            Error::Denied(_) => 0,
            Error::NotFound(_) => 1,
            Error::Invalid(_) => 2,
            Error::TooLarge(_) => 3,
            Error::Unavailable(_) => 4,
            Error::Failed(_) => 5,
        }
    }

    pub(crate) fn into_message(self) -> String {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Invalid(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Failed(m) => m,
        }
    }

    /// Rebuilds an error the host lowered into guest memory. A discriminant
    /// outside the variant would be a host bug; it is kept visible as `Failed`
    /// rather than trapping, since the guest can still report it.
    pub(crate) fn from_discriminant(disc: u8, message: String) -> Error {
        match disc {
            0 => Error::Denied(message),
            1 => Error::NotFound(message),
            2 => Error::Invalid(message),
            3 => Error::TooLarge(message),
            4 => Error::Unavailable(message),
            5 => Error::Failed(message),
            other => Error::Failed(format!("host returned unknown error case {other}: {message}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.case(), self.message())
    }
}

impl std::error::Error for Error {}
