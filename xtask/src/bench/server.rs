//! Starting and stopping the service binary for a scenario.
//!
//! The service listens on a free `127.0.0.1` port and keeps its log and
//! checkpoint in the data folder the scenario gives it; its output goes to
//! `service.log` next to them. Its environment is only what is set here, so
//! the caller's `RUNTIME_*` variables cannot change a measurement. It is
//! stopped with SIGTERM (sent by the system's `kill`, since this project
//! forbids `unsafe`) and must still be running, exit 0 within a bounded time
//! and not have logged a panic; a server that is dropped without being
//! stopped is killed, so no process outlives the command. The bench, chaos
//! and `fuzz-http` all start the service this way.

use crate::bench::load::{Call, Connection};
use anyhow::{Context, bail};
use hyper::StatusCode;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The event log's file name inside a data folder.
pub const EVENT_LOG: &str = "runtime-events.jsonl";
/// The projection checkpoint's file name inside a data folder.
pub const CHECKPOINT: &str = "projection-state.json";
/// The archive folder inside a data folder: the service's default
/// `RUNTIME_ARCHIVE_DIR`, beside the event log.
pub const ARCHIVE: &str = "archive";
/// The service's output inside a data folder.
pub(crate) const SERVICE_LOG: &str = "service.log";

/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(5);
/// Longest the service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the service may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running service process.
pub struct Server {
    /// The process (chaos kills it with SIGKILL and reads its exit status).
    pub(crate) child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// When it was spawned.
    spawned: Instant,
    log: PathBuf,
}

impl Server {
    /// Spawns `binary` on a free loopback port with its data in `data_dir`.
    pub fn spawn(binary: &Path, data_dir: &Path) -> anyhow::Result<Server> {
        Self::spawn_with_env(binary, data_dir, &[])
    }

    /// Like [`Server::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let addr = free_loopback_addr()?;
        let log = data_dir.join(SERVICE_LOG);
        let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("RUNTIME_BIND_ADDR", addr.to_string())
            .env("RUNTIME_EVENT_LOG_PATH", data_dir.join(EVENT_LOG))
            .env("RUNTIME_CHECKPOINT_PATH", data_dir.join(CHECKPOINT))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Server {
            child,
            addr,
            spawned,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /readyz` every 5 ms until it answers 200; returns the time
    /// from spawn to that answer.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        self.wait_ready_within(READY_TIMEOUT).await
    }

    /// [`Server::wait_ready`] with a limit of its own, for a first start
    /// that indexes a log of many gigabytes on a busy machine.
    pub async fn wait_ready_within(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let call = Call::get("/readyz");
        let deadline = self.spawned + timeout;
        while Instant::now() < deadline {
            if let Ok(mut connection) = Connection::open(self.addr).await
                && let Ok((StatusCode::OK, _)) = connection.send(&call).await
            {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the service exited before it was ready ({status}){}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
        bail!(
            "the service was not ready within {timeout:?}{}",
            self.log_tail()
        )
    }

    /// A `/proc/PID/status` field in kilobytes (`VmRSS`, `VmHWM`).
    pub fn memory_kb(&self, field: &str) -> anyhow::Result<u64> {
        proc_status_kb(self.pid(), field)
    }

    /// Sends SIGTERM and waits for the graceful exit, which must be status 0
    /// with no panic logged before it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the service exited before it was stopped ({status}){}",
                self.log_tail()
            );
        }
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed ({sent})");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the service exited with {status} after SIGTERM{}",
                        self.log_tail()
                    );
                }
                let output = std::fs::read_to_string(&self.log).unwrap_or_default();
                if output.contains("panicked at") {
                    bail!("the service logged a panic{}", self.log_tail());
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("the service did not exit within {STOP_TIMEOUT:?} of SIGTERM")
    }

    /// The end of the service's output, to append to an error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "\nservice output ({}):\n{}",
            self.log.display(),
            lines.join("\n")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address no one listens on right now.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(probe.local_addr()?)
}

/// Reads `field` (in kB) from `/proc/PID/status`.
fn proc_status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Copies the regular files of `from` into the new folder `to` (a prepared
/// data folder, so that each measurement starts from the same bytes).
pub fn copy_data_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != SERVICE_LOG {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
