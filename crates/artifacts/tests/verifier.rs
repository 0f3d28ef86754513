//! The offline verifier: an untouched receipt and its events are accepted,
//! a one-byte change anywhere in either is rejected (unless it leaves the
//! JSON value as it was), signatures are deterministic, and the
//! `openagents-receipt` binary answers with the documented exit codes.

use openagents_artifacts::{
    Evidence, FixtureRun, Receipt, ReceiptSigner, VerifyError, verify_receipt,
};
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture with tool calls and verification entries: every kind of
/// receipt field is present.
fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/runs/tool-calls-with-verification")
        .join(name)
}

fn signer() -> ReceiptSigner {
    ReceiptSigner::from_hex(&"07".repeat(32)).unwrap()
}

/// The fixture's signed receipt, its events as a JSON array, and its replay.
fn pair() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(fixture_path("run.json")).unwrap();
    let fixture = FixtureRun::from_json(&bytes).unwrap();
    let receipt = fixture.receipt().signed(&signer()).to_json_bytes();
    let run: Value = serde_json::from_slice(&bytes).unwrap();
    let events = serde_json::to_vec_pretty(&run["events"]).unwrap();
    (receipt, events, fixture.replay())
}

fn pubkey() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(signer().public_key_hex(), &mut bytes).unwrap();
    bytes
}

/// Whether `changed` still parses to the same JSON value as `original`: a
/// change the verifier may accept, since every check reads values.
fn same_value(original: &[u8], changed: &[u8]) -> bool {
    let original: Value = serde_json::from_slice(original).unwrap();
    serde_json::from_slice::<Value>(changed).is_ok_and(|changed| changed == original)
}

fn with_byte(bytes: &[u8], position: usize, byte: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    changed[position] = byte;
    changed
}

#[test]
fn the_untouched_pair_is_accepted_with_events_replay_and_key() {
    let (receipt, events, replay) = pair();
    let verified = verify_receipt(&receipt, Some(Evidence::Events(&events)), Some(&pubkey()))
        .expect("the untouched pair verifies");
    assert_eq!(verified.signer, Some(signer().public_key_hex()));
    assert!(verified.recomputed.contains(&"trajectory_hash"));
    let verified = verify_receipt(&receipt, Some(Evidence::Replay(&replay)), None).unwrap();
    assert!(!verified.recomputed.contains(&"trajectory_hash"));
    assert!(verified.recomputed.contains(&"tool_calls"));
    // The fixture's run.json is itself `{"run": ..., "events": [...]}`.
    let run_json = std::fs::read(fixture_path("run.json")).unwrap();
    verify_receipt(&receipt, Some(Evidence::Events(&run_json)), None).unwrap();
    // Events as the service shows them carry the unhashed `written_by`.
    let mut shown: Value = serde_json::from_slice(&events).unwrap();
    for event in shown.as_array_mut().unwrap() {
        event["written_by"] = "ci".into();
    }
    let shown = serde_json::to_vec(&shown).unwrap();
    verify_receipt(&receipt, Some(Evidence::Events(&shown)), None).unwrap();
}

#[test]
fn every_single_byte_change_of_the_receipt_is_rejected() {
    let (receipt, events, _) = pair();
    for position in 0..receipt.len() {
        for flip in [0x01, 0x20] {
            let changed = with_byte(&receipt, position, receipt[position] ^ flip);
            let result = verify_receipt(&changed, Some(Evidence::Events(&events)), None);
            assert!(
                result.is_err() || same_value(&receipt, &changed),
                "byte {position} ^ {flip:#x} of the receipt was accepted: {}",
                String::from_utf8_lossy(&changed)
            );
        }
    }
}

#[test]
fn every_single_byte_change_of_the_events_is_rejected() {
    let (receipt, events, _) = pair();
    for position in 0..events.len() {
        for flip in [0x01, 0x20] {
            let changed = with_byte(&events, position, events[position] ^ flip);
            let result = verify_receipt(&receipt, Some(Evidence::Events(&changed)), None);
            assert!(
                result.is_err() || same_value(&events, &changed),
                "byte {position} ^ {flip:#x} of the events was accepted"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_byte_anywhere_is_rejected_unless_the_value_is_unchanged(
        in_receipt in any::<bool>(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (receipt, events, _) = pair();
        let (target, other) = if in_receipt { (&receipt, &events) } else { (&events, &receipt) };
        let position = position.index(target.len());
        prop_assume!(target[position] != byte);
        let changed = with_byte(target, position, byte);
        let result = if in_receipt {
            verify_receipt(&changed, Some(Evidence::Events(other)), None)
        } else {
            verify_receipt(other, Some(Evidence::Events(&changed)), None)
        };
        prop_assert!(result.is_err() || same_value(target, &changed));
    }
}

#[test]
fn mismatches_name_the_field() {
    let (receipt, events, _) = pair();
    let mut parsed: Receipt = serde_json::from_slice(&receipt).unwrap();
    parsed.tool_calls[1].latency_ms = 1.into();
    // Re-sealed consistently, so that only the evidence check can catch it.
    let resealed = {
        parsed.signature = None;
        let mut value = serde_json::to_value(&parsed).unwrap();
        let digest = openagents_artifacts::canonical_receipt_digest(value.as_object().unwrap());
        value["canonical_json_sha256"] = hex::encode(digest).into();
        serde_json::to_vec(&value).unwrap()
    };
    match verify_receipt(&resealed, Some(Evidence::Events(&events)), None) {
        Err(VerifyError::Mismatch { field, .. }) => assert_eq!(field, "tool_calls[1].latency_ms"),
        other => panic!("{other:?}"),
    }
    // Unsigned, so a required key is missing.
    match verify_receipt(&resealed, None, Some(&pubkey())) {
        Err(VerifyError::Mismatch { field, .. }) => assert_eq!(field, "signature"),
        other => panic!("{other:?}"),
    }
    let other_key = [9u8; 32];
    match verify_receipt(&receipt, None, Some(&other_key)) {
        Err(VerifyError::Mismatch { field, .. }) => assert_eq!(field, "signature.signer_pubkey"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn signatures_are_deterministic() {
    let (first, _, _) = pair();
    let (second, _, _) = pair();
    assert_eq!(first, second);
    let receipt: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        receipt["signature"]["signature_hex"]
            .as_str()
            .unwrap()
            .len(),
        128
    );
}

/// Runs the binary with `args`; its exit code, stdout and stderr.
fn run(args: &[&Path]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_openagents-receipt"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn the_binary_answers_with_its_exit_codes() {
    let (receipt, events, replay) = pair();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let receipt_file = write("receipt.json", &receipt);
    let events_file = write("events.json", &events);
    let replay_file = write("replay.jsonl", &replay);
    let verify = Path::new("verify");
    let (events_flag, replay_flag, key_flag) = (
        Path::new("--events"),
        Path::new("--replay"),
        Path::new("--pubkey"),
    );
    let key = signer().public_key_hex();

    let (code, stdout, _) = run(&[
        verify,
        &receipt_file,
        events_flag,
        &events_file,
        key_flag,
        Path::new(&key),
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("ok: ") && stdout.contains(&key),
        "{stdout}"
    );
    assert_eq!(
        run(&[verify, &receipt_file, replay_flag, &replay_file]).0,
        0
    );

    // A changed tool name: the digest no longer matches.
    let text = String::from_utf8(receipt.clone()).unwrap();
    let tampered = write(
        "tampered.json",
        text.replacen("fs.read_file", "fs.read_filf", 1).as_bytes(),
    );
    let (code, _, stderr) = run(&[verify, &tampered, events_flag, &events_file]);
    assert_eq!(code, 1);
    assert!(stderr.contains("canonical_json_sha256"), "{stderr}");

    let (code, _, stderr) = run(&[verify, &dir.path().join("missing.json")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unreadable receipt"), "{stderr}");
    let not_json = write("not.json", b"{");
    assert_eq!(run(&[verify, &receipt_file, events_flag, &not_json]).0, 2);
    assert_eq!(run(&[Path::new("sign"), &receipt_file]).0, 2);
    assert_eq!(
        run(&[verify, &receipt_file, key_flag, Path::new("xyz")]).0,
        2
    );
}
