//! Why a training-side command stopped, sorted by what the user has to do
//! about it: the CLI maps each kind to the exit status README.md documents.

use std::fmt;

/// A message for the user, with its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainError {
    /// The request does not fit: a bad option value, a run folder in use or
    /// holding another run, a resume that changes a recorded setting (exit 2).
    Usage(String),
    /// A file could not be read or written (exit 2).
    Io(String),
    /// Data that is missing or does not fit the flow (exit 2).
    Data(String),
    /// The computation failed: a non-finite loss, a flow that does not
    /// compile, an executor error (exit 1).
    Failed(String),
}

impl TrainError {
    pub fn message(&self) -> &str {
        match self {
            TrainError::Usage(m)
            | TrainError::Io(m)
            | TrainError::Data(m)
            | TrainError::Failed(m) => m,
        }
    }

    /// The exit status of README.md: 1 for a failed computation, 2 for the rest.
    pub fn exit_status(&self) -> u8 {
        match self {
            TrainError::Failed(_) => 1,
            TrainError::Usage(_) | TrainError::Io(_) | TrainError::Data(_) => 2,
        }
    }
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TrainError {}

/// candle's errors come from the computation itself.
impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> TrainError {
        TrainError::Failed(e.to_string())
    }
}
