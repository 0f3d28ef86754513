//! `openagents-receipt verify RECEIPT.json [--events EVENTS.json | --replay
//! REPLAY.jsonl] [--pubkey HEX]`: checks a receipt offline, without the
//! service (see `openagents_artifacts::verify_receipt` and
//! `docs/ARTIFACTS.md`).
//!
//! Exit codes: 0 when every check passes (one `ok` line on stdout), 1 at the
//! first field that does not match (named on stderr), 2 when an input cannot
//! be read or the arguments are wrong.

use openagents_artifacts::{Evidence, VerifyError, verify_receipt};
use std::process::ExitCode;

const USAGE: &str = "usage: openagents-receipt verify RECEIPT.json \
                     [--events EVENTS.json | --replay REPLAY.jsonl] [--pubkey HEX]";

/// The parsed command line.
struct Args {
    receipt: String,
    events: Option<String>,
    replay: Option<String>,
    pubkey: Option<[u8; 32]>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error @ VerifyError::Mismatch { .. }) => {
            eprintln!("{}: {error}", args.receipt);
            ExitCode::from(1)
        }
        Err(error @ VerifyError::Unreadable { .. }) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    if words.next().as_deref() != Some("verify") {
        return Err("the only command is `verify`".to_owned());
    }
    let mut receipt = None;
    let (mut events, mut replay, mut pubkey) = (None, None, None);
    while let Some(word) = words.next() {
        let mut value = |flag: &str| words.next().ok_or(format!("{flag} needs a value"));
        match word.as_str() {
            "--events" => events = Some(value("--events")?),
            "--replay" => replay = Some(value("--replay")?),
            "--pubkey" => {
                let text = value("--pubkey")?;
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut bytes)
                    .map_err(|_| format!("--pubkey {text:?} is not 64 hex digits"))?;
                pubkey = Some(bytes);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ if receipt.is_some() => return Err(format!("unexpected argument {word:?}")),
            _ => receipt = Some(word),
        }
    }
    if events.is_some() && replay.is_some() {
        return Err("give --events or --replay, not both".to_owned());
    }
    Ok(Args {
        receipt: receipt.ok_or("RECEIPT.json is required")?,
        events,
        replay,
        pubkey,
    })
}

/// Reads the files and runs the check; the `ok` line on success.
fn run(args: &Args) -> Result<String, VerifyError> {
    let read = |input: &'static str, path: &str| {
        std::fs::read(path).map_err(|error| VerifyError::Unreadable {
            input,
            reason: format!("{path}: {error}"),
        })
    };
    let receipt = read("receipt", &args.receipt)?;
    let events = args
        .events
        .as_deref()
        .map(|p| read("events", p))
        .transpose()?;
    let replay = args
        .replay
        .as_deref()
        .map(|p| read("replay", p))
        .transpose()?;
    let evidence = match (&events, &replay) {
        (Some(bytes), _) => Some(Evidence::Events(bytes)),
        (None, Some(bytes)) => Some(Evidence::Replay(bytes)),
        (None, None) => None,
    };
    let verified = verify_receipt(&receipt, evidence, args.pubkey.as_ref())?;
    let signer = verified
        .signer
        .map_or_else(|| "unsigned".to_owned(), |key| format!("signed by {key}"));
    let mut line = format!("ok: canonical_json_sha256 matches, {signer}");
    if !verified.recomputed.is_empty() {
        line.push_str(", recomputed ");
        line.push_str(&verified.recomputed.join(", "));
    }
    Ok(line)
}
