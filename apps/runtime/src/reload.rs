//! Files the service reloads while it runs (the sync-token JWKS, the
//! revoked-`jti` file, the credentials file): one thread reads each every
//! [`POLL_INTERVAL`] and hands changed bytes to the file's `apply`.
//!
//! A change takes effect within about a quarter of a second, with no restart
//! and no signal; a SIGHUP makes the thread read the files at once. A reload that fails (unreadable file, content `apply`
//! refuses) keeps what is in force, is logged once per distinct content and
//! counted as `outcome="failed"`; the file is tried again at every poll, and
//! the next good version is put in force.

use crate::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the files are read.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What puts a file's new bytes in force, or says why it cannot.
pub(crate) type Apply = Box<dyn FnMut(&[u8]) -> Result<(), String> + Send>;

/// One reloaded file.
pub(crate) struct Watch {
    /// The file.
    pub(crate) path: PathBuf,
    /// Its name in logs and metrics (`jwks`, `revoked_jtis`, `credentials`).
    pub(crate) file: &'static str,
    /// Puts new bytes in force.
    pub(crate) apply: Apply,
}

/// Reads `path` whole; the error is what logs show.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the file: {e}"))
}

/// The background thread; stopped on drop.
pub(crate) struct Reloader {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reloader {
    /// Starts watching `watches` (their current bytes count as seen), or
    /// returns `None` when there is nothing to watch.
    pub(crate) fn start(watches: Vec<Watch>, metrics: Arc<Metrics>) -> Option<Self> {
        if watches.is_empty() {
            return None;
        }
        let mut watched: Vec<(Watch, Result<Vec<u8>, String>)> = watches
            .into_iter()
            .map(|watch| {
                let seen = read(&watch.path);
                (watch, seen)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("file-reloader".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    std::thread::park_timeout(POLL_INTERVAL);
                    for (watch, last) in &mut watched {
                        let seen = read(&watch.path);
                        if seen == *last {
                            continue;
                        }
                        let outcome = match &seen {
                            Ok(bytes) => (watch.apply)(bytes),
                            Err(reason) => Err(reason.clone()),
                        };
                        metrics.file_reload(watch.file, outcome.is_ok());
                        match outcome {
                            Ok(()) => tracing::info!(
                                file = watch.file,
                                path = %watch.path.display(),
                                "reloaded"
                            ),
                            Err(reason) => tracing::warn!(
                                file = watch.file,
                                path = %watch.path.display(),
                                %reason,
                                "not reloaded; what was in force stays in force"
                            ),
                        }
                        *last = seen;
                    }
                }
            })
            .expect("spawning the file reloader");
        Some(Reloader {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Reloader {
    /// Reads every file now rather than at the next tick (on SIGHUP).
    pub(crate) fn poll_now(&self) {
        if let Some(thread) = self.thread.lock().expect("reloader lock").as_ref() {
            thread.thread().unpark();
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().expect("reloader lock").take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
