//! Helpers shared by the khala integration tests.

pub mod signers;
