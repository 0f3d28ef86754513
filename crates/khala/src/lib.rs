//! Khala topic polling semantics, without HTTP.
//!
//! This crate owns the rules behind `GET /internal/v1/khala/topics/{topic}/messages`:
//!
//! - [`topic`]: the topic grammar and canonical names;
//! - [`poll`]: query limits, the stale-cursor rule
//!   ([`poll::ensure_cursor_retained`]) and what a poll returns
//!   ([`poll::plan`]);
//! - [`window`]: bounded in-memory windows of messages, per topic and per set
//!   of topics;
//! - [`auth`]: sync-token (JWT) verification;
//! - [`keys`]: the keys tokens verify under: HS256 secrets (current and
//!   previous) and a JWKS of EdDSA, ES256 and RS256 keys by `kid`;
//! - [`acl`]: scopes per topic kind and the owner-match rule
//!   ([`acl::Principal::owns`]);
//! - [`denial`] and [`reason`]: every refusal, its reason code, HTTP status
//!   and envelope `error` code.
//!
//! It does no I/O, spawns nothing, reads no environment and no clock: the
//! caller passes in the time, the configuration and the ownership facts.

pub mod acl;
pub mod auth;
pub mod denial;
pub mod keys;
pub mod message;
pub mod poll;
pub mod reason;
pub mod topic;
pub mod window;
