//! The runtime service binary.
fn main() {}
