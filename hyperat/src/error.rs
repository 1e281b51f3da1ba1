//! One error type for the core library; every message names what was wrong.

/// Errors from loading, configuring and running models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or run configuration that cannot be built.
    #[error("configuration: {0}")]
    Config(String),
    /// A checkpoint whose tensors do not match the architecture.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A dataset file that is missing or malformed.
    #[error("data: {0}")]
    Data(String),
    /// A caller passed tensors of the wrong shape or a value out of range.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The caller asked the work to stop (a cancelled job, a dropped client).
    #[error("cancelled")]
    Cancelled,
    /// A data-parallel collective operation failed: a peer (thread or node) stopped.
    #[error(
        "data-parallel step failed: {0} (a peer stopped; the run resumes from its last checkpoint)"
    )]
    PeerLost(String),
    /// File-system failure, with the path involved. The message carries the cause, so
    /// it is not also chained as `source` (`{:#}` would print it twice).
    #[error("{path}: {cause}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        cause: std::io::Error,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            cause,
        }
    }

    /// The same error, its message led by `what` (e.g. which of several models failed).
    pub fn within(self, what: &str) -> Self {
        match self {
            Error::Config(m) => Error::Config(format!("{what}: {m}")),
            Error::Checkpoint(m) => Error::Checkpoint(format!("{what}: {m}")),
            Error::Data(m) => Error::Data(format!("{what}: {m}")),
            Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
            Error::PeerLost(m) => Error::PeerLost(format!("{what}: {m}")),
            Error::Io { path, cause } => Error::Io {
                path: format!("{what}: {path}"),
                cause,
            },
            Error::Cancelled => Error::Cancelled,
        }
    }
}
