//! Why an export could not be read. Every error names the file it is about,
//! because an operator running the harness has two exports of five files
//! each and must know which one to fix. The underlying cause is the error's
//! `source()`, not part of its message, so that a printer of the error chain
//! shows it once.

use std::io;
use std::path::PathBuf;

/// An input of the harness that cannot be read or does not have the shape
/// it must have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file cannot be read (most often: it does not exist).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON.
    #[error("{} is not valid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A line of a replay file is not valid JSON.
    #[error("line {line} of {} is not valid JSON", path.display())]
    ReplayLine {
        /// The replay file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A field the comparison needs is absent.
    #[error("{} has no field `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The field, as a dotted path where it is nested.
        field: String,
    },
    /// A field the comparison needs has the wrong JSON type.
    #[error("{}: field `{field}` is not {expected}", path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The field, as a dotted path where it is nested.
        field: String,
        /// What it should be, e.g. `a string`.
        expected: &'static str,
    },
    /// The receipt declares another schema than `openagents.receipt.v1`.
    #[error("{} has schema {found:?}, expected \"openagents.receipt.v1\"", path.display())]
    WrongSchema {
        /// The receipt file.
        path: PathBuf,
        /// The schema it declares.
        found: String,
    },
}
