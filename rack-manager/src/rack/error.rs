//! The rack core's errors: what went wrong in the rack's own terms, with a stable code and a hint
//! that says what to do. The HTTP layer maps [`ErrorKind`] to a status; the peer layer and the
//! loops log the message.

use crate::store::StoreError;

/// What kind of failure, independent of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; asking again the same way fails again.
    Invalid,
    /// What the request names does not exist.
    NotFound,
    /// The rack's state forbids it now (or another writer changed it meanwhile).
    Conflict,
    /// Well formed, but refused on its merits: an untrusted image, no room to place.
    Refused,
    /// A host or the scheduler cannot act now; retrying later may work.
    Unavailable,
    /// The rack failed (its store, its disk).
    Internal,
}

/// A failed rack operation. Nothing was changed unless the message says so.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RackError {
    pub kind: ErrorKind,
    /// Stable, machine-readable: `not_found`, `no_placement`, `host_unreachable`, ...
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn hint_of(hint: impl Into<String>) -> Option<String> {
    let hint = hint.into();
    (!hint.is_empty()).then_some(hint)
}

impl RackError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError { kind, code, message: message.into(), hint: hint_of(hint) }
    }

    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::Invalid, "bad_request", message, hint)
    }

    pub fn not_found(message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::NotFound, "not_found", message, hint)
    }

    pub fn conflict(message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::Conflict, "conflict", message, hint)
    }

    pub fn refused(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::Refused, code, message, hint)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::Unavailable, code, message, hint)
    }

    pub fn internal(message: impl Into<String>) -> RackError {
        RackError::new(ErrorKind::Internal, "internal", message, "see the daemon's output; the request may be retried")
    }

    /// A host that did not answer while the core acted on it.
    pub fn host_unreachable(message: impl Into<String>, hint: impl Into<String>) -> RackError {
        RackError::unavailable("host_unreachable", message, hint)
    }
}

impl From<StoreError> for RackError {
    fn from(e: StoreError) -> RackError {
        match e {
            // Lost a race with another manager of an etcd rack: nothing was written.
            StoreError::Conflict(message) => RackError::conflict(message, "look again and retry"),
            e => RackError::internal(e.to_string()),
        }
    }
}

pub type Result<T, E = RackError> = std::result::Result<T, E>;
