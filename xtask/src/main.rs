//! `cargo xtask <command>`: project automation written in Rust rather than shell.

fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown xtask command {command:?}")
}
