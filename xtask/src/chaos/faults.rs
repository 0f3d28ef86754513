//! Fault injection on a stopped service: each fault is applied to a copy of
//! the data folder and the service is started on the copy.
//!
//! - A torn final line (half of a record, no newline) is a write that was
//!   never acknowledged: the service must start, cut exactly those bytes off
//!   and still show every acknowledged write.
//! - One changed byte in a line in the middle of the log is damage to
//!   acknowledged history: the service must refuse to start (non-zero exit)
//!   and say which file and which byte offset.

use crate::bench::load::{Call, Connection};
use crate::bench::server::{EVENT_LOG, SERVICE_LOG, Server, copy_data_dir};
use crate::chaos::ledger::Ledger;
use crate::chaos::verify::verify;
use anyhow::{Context, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest the service may take to start on a damaged copy, or to exit.
const FAULT_BOUND: Duration = Duration::from_secs(30);

/// How often a refusing service is checked for its exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// What one injected fault led to.
#[derive(Debug)]
pub(crate) struct FaultOutcome {
    /// The fault.
    pub(crate) name: &'static str,
    /// Whether the service did what the recovery rules document.
    pub(crate) passed: bool,
    /// What happened, in one line.
    pub(crate) detail: String,
}

/// Appends half of the last record, without its newline, to a copy of
/// `data`, and expects a start that cuts it off and keeps every
/// acknowledged write.
pub(crate) async fn torn_final_line(
    binary: &Path,
    data: &Path,
    ledger: &Ledger,
) -> anyhow::Result<FaultOutcome> {
    let copy = tempfile::Builder::new()
        .prefix("openagents-chaos-torn-")
        .tempdir()?;
    copy_data_dir(data, copy.path())?;
    let log = copy.path().join(EVENT_LOG);
    let mut bytes = std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
    let valid_len = bytes.len() as u64;
    let torn = half_of_last_line(&bytes)?.to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&log, &bytes).with_context(|| format!("writing {}", log.display()))?;
    let mut server = Server::spawn(binary, copy.path())?;
    let started = match tokio::time::timeout(FAULT_BOUND, server.wait_ready()).await {
        Ok(Ok(elapsed)) => elapsed,
        Ok(Err(error)) => return Ok(failed_torn(format!("the service did not start: {error:#}"))),
        Err(_) => return Ok(failed_torn(format!("not ready within {FAULT_BOUND:?}"))),
    };
    let mut problems = Vec::new();
    let cut_len = std::fs::metadata(&log)?.len();
    if cut_len != valid_len {
        problems.push(format!(
            "the log is {cut_len} bytes after the start, expected {valid_len}"
        ));
    }
    let warned = service_output(copy.path()).contains("torn final write");
    if !warned {
        problems.push("no warning about the torn write in the service output".into());
    }
    match verify(server.addr, ledger).await {
        Ok(verdict) => problems.extend(verdict.problems.into_iter().take(5)),
        Err(error) => problems.push(format!("verification failed: {error:#}")),
    }
    if let Err(error) = accepts_a_write(&server).await {
        problems.push(format!("a write after the cut failed: {error:#}"));
    }
    server.stop().await?;
    let passed = problems.is_empty();
    let detail = if passed {
        format!(
            "started in {} ms, cut the {} torn bytes (log back to {valid_len} bytes, warning logged), \
             all {} acknowledged writes present, next write accepted",
            started.as_millis(),
            torn.len(),
            ledger.acked
        )
    } else {
        problems.join("; ")
    };
    Ok(FaultOutcome {
        name: "torn final line",
        passed,
        detail,
    })
}

/// Changes one byte in the middle line of a copy of `data` and expects the
/// service to refuse to start, naming the file and the line's byte offset.
pub(crate) async fn corrupt_middle_line(
    binary: &Path,
    data: &Path,
) -> anyhow::Result<FaultOutcome> {
    let copy = tempfile::Builder::new()
        .prefix("openagents-chaos-corrupt-")
        .tempdir()?;
    copy_data_dir(data, copy.path())?;
    let log = copy.path().join(EVENT_LOG);
    let mut bytes = std::fs::read(&log).with_context(|| format!("reading {}", log.display()))?;
    let (offset, damaged_at) = damage_middle_line(&mut bytes)?;
    std::fs::write(&log, &bytes).with_context(|| format!("writing {}", log.display()))?;
    let mut server = Server::spawn(binary, copy.path())?;
    let deadline = Instant::now() + FAULT_BOUND;
    let exit = loop {
        if let Some(status) = server.child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(EXIT_POLL).await;
    };
    drop(server);
    let output = service_output(copy.path());
    let path = log.display().to_string();
    let offset_text = format!("byte offset {offset}");
    let message = output
        .lines()
        .find(|line| line.contains(&offset_text))
        .unwrap_or("")
        .trim();
    let (passed, detail) = match exit {
        None => (false, format!("still running after {FAULT_BOUND:?}")),
        Some(status) if status.success() => (false, "exited 0".to_owned()),
        Some(status) => {
            let names_both = output.contains(&path) && !message.is_empty();
            let detail = format!(
                "byte {damaged_at} changed (line at offset {offset}); refused to start ({status}); \
                 output names the file and offset: {names_both}: {message}"
            );
            (names_both, detail)
        }
    };
    Ok(FaultOutcome {
        name: "corrupt middle line",
        passed,
        detail,
    })
}

/// A failed torn-line outcome.
fn failed_torn(detail: String) -> FaultOutcome {
    FaultOutcome {
        name: "torn final line",
        passed: false,
        detail,
    }
}

/// The first half of the log's last line: what a write cut short by a
/// crash leaves behind.
fn half_of_last_line(bytes: &[u8]) -> anyhow::Result<&[u8]> {
    let lines = line_starts(bytes);
    let Some(&start) = lines.last() else {
        bail!("the log is empty");
    };
    let line = &bytes[start..bytes.len() - 1];
    Ok(&line[..line.len() / 2])
}

/// Changes the byte in the middle of the log's middle line; returns the
/// line's offset and the changed byte's offset.
fn damage_middle_line(bytes: &mut [u8]) -> anyhow::Result<(usize, usize)> {
    let lines = line_starts(bytes);
    if lines.len() < 3 {
        bail!("the log has {} lines; damage needs at least 3", lines.len());
    }
    let middle = lines.len() / 2;
    let (start, end) = (lines[middle], lines[middle + 1] - 1);
    let at = start + (end - start) / 2;
    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    Ok((start, at))
}

/// The offsets where the log's lines start (every line ends in `\n`).
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(
        bytes
            .iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .map(|(at, _)| at + 1),
    );
    starts.pop();
    starts
}

/// What the service printed in `data`.
fn service_output(data: &Path) -> String {
    std::fs::read_to_string(data.join(SERVICE_LOG)).unwrap_or_default()
}

/// Creates a run, to show the cut log accepts writes again.
async fn accepts_a_write(server: &Server) -> anyhow::Result<()> {
    let mut connection = Connection::open(server.addr).await?;
    let call = Call::post(
        "/internal/v1/runs",
        r#"{"metadata":{"chaos":"after-torn-line"}}"#,
    );
    connection.send_ok(&call).await?;
    Ok(())
}
