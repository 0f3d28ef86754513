//! The recovered service core: the authority over the open log, and
//! everything derived from it. Built once at start, after recovery.

use crate::authority::{Authority, Stream};
use crate::config::Config;
use openagents_event_log::{EventLog, LogOptions, OpenError, OpenReport};
use std::sync::Arc;

/// Everything that exists only once the log is recovered.
pub struct Core {
    /// The write authority and its log.
    pub authority: Authority,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The event log could not be opened or recovered.
    #[error(transparent)]
    Log(#[from] OpenError),
}

impl Core {
    /// Opens and recovers the log. Blocking: run it off the async runtime.
    pub fn open(config: &Config) -> Result<(Core, OpenReport), StartError> {
        let (log, report) =
            EventLog::<Stream>::open(&config.event_log_path, LogOptions::default())?;
        let authority = Authority::new(Arc::new(log), config.authority_write_mode);
        Ok((Core { authority }, report))
    }

    /// Stops the writer after the writes already queued.
    pub fn shutdown(&self) {
        self.authority.log().shutdown();
    }
}
