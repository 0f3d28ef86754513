//! The artifacts a run publishes from its event stream, and nothing else:
//!
//! - the receipt `openagents.receipt.v1` ([`build_receipt`]): one JSON object
//!   that commits to the whole trajectory with a single hash and lists the
//!   run's tool calls and verification commands;
//! - receipt signatures ([`ReceiptSigner`], [`ReceiptSignature`]): BIP-340
//!   Schnorr over the receipt's `canonical_json_sha256`;
//! - the replay `REPLAY.jsonl` v1 ([`write_replay`]): one JSON line per
//!   event, framed by a header, a session start and, for a sealed run, a
//!   session end;
//! - the replay validator ([`validate_replay`]), which checks every rule of the
//!   replay format and names the first line that breaks one;
//! - the offline receipt check ([`verify_receipt`]) behind the
//!   `openagents-receipt` binary;
//! - the fixture event logs ([`FixtureRun`]) the golden artifacts are built
//!   from.
//!
//! Both builders take the events as an iterator of `Result`s and read them in
//! one pass, so a caller can stream a long run from disk: memory holds one
//! event at a time plus the receipt's tool-call and verification entries.
//!
//! The crate does no I/O of its own (the caller hands in readers, writers and
//! iterators), knows nothing about HTTP and holds no global state. Every hash
//! comes from `openagents-canonical`.

mod error;
mod events;
mod fixture;
mod header;
mod receipt;
mod replay;
mod signature;
mod validate;
mod verify;

pub use error::BuildError;
pub use fixture::{FixtureError, FixtureRun};
pub use header::RunHeader;
pub use receipt::{
    RECEIPT_SCHEMA, Receipt, ToolCall, UNHASHED_RECEIPT_FIELDS, Verification, build_receipt,
    canonical_receipt_digest,
};
pub use replay::{EndStatus, REPLAY_PRODUCER, REPLAY_VERSION, ReplayLine, write_replay};
pub use signature::{
    KeyError, ReceiptSignature, ReceiptSigner, SIGNATURE_SCHEMA, SIGNATURE_SCHEME, SignatureError,
};
pub use validate::{ReplayRule, ValidationError, validate_replay};
pub use verify::{Evidence, Verified, VerifyError, verify_receipt};
