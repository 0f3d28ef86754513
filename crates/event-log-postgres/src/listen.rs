//! The listener: a connection that `LISTEN`s for log-head updates and nudges
//! the writer to take in other instances' appends, so that reads and
//! long-polls on this instance see them within milliseconds.
//!
//! Notifications name the schema, since instances of different deployments
//! may share one database. While the connection is down the listener nudges
//! the writer every retry, so the log notices the outage (and its end) even
//! when no request arrives; so it does while its own connection is up but
//! the writer's last attempt failed (only the writer's connection died, say
//! during a `COMMIT`), so that readiness returns without a request.

use crate::connect::{Connector, error_text};
use openagents_event_log::{Refresher, StreamState};
use postgres::fallible_iterator::FallibleIterator;
use std::time::Duration;

/// The notification channel the `log_head` trigger sends on.
pub(crate) const CHANNEL: &str = "openagents_log";

/// How long one wait for notifications lasts before checking for shutdown.
const POLL: Duration = Duration::from_millis(250);
/// Pause between attempts to reconnect.
const RETRY: Duration = Duration::from_millis(500);

/// Starts the listener thread; it ends once the log is shut down.
pub(crate) fn spawn<S: StreamState>(
    connector: Connector,
    refresher: Refresher<S>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("event-log-listener".into())
        .spawn(move || {
            while !refresher.is_closed() {
                if let Err(reason) = listen(&connector, &refresher) {
                    tracing::warn!(location = connector.location(), %reason, "log listener lost its connection; retrying");
                    // Let the writer find out whether the database answers.
                    refresher.nudge(None);
                    std::thread::sleep(RETRY);
                }
            }
        })
        .map(|_| ())
}

/// Listens on one connection until it fails or the log closes.
fn listen<S: StreamState>(connector: &Connector, refresher: &Refresher<S>) -> Result<(), String> {
    let mut client = connector.connect().map_err(|e| error_text(&e))?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| error_text(&e))?;
    let schema: String = client
        .query_one("SELECT current_schema()", &[])
        .map_err(|e| error_text(&e))?
        .get(0);
    // Whatever was appended while this connection was not listening.
    refresher.nudge(None);
    while !refresher.is_closed() {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(POLL);
            while let Some(notification) = waiting.next().map_err(|e| error_text(&e))? {
                if let Some(lsn) = head_of(notification.payload(), &schema) {
                    refresher.nudge(Some(lsn));
                }
                if refresher.is_closed() {
                    return Ok(());
                }
            }
        }
        // A quiet connection may be a dead one: ask the server.
        client.simple_query("").map_err(|e| error_text(&e))?;
        if refresher.medium_unavailable() {
            refresher.nudge(None);
        }
    }
    Ok(())
}

/// The lsn a notification announces, if it is about this schema's log.
fn head_of(payload: &str, schema: &str) -> Option<u64> {
    let (from, lsn) = payload.rsplit_once(' ')?;
    (from == schema).then(|| lsn.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::head_of;

    #[test]
    fn only_this_schemas_notifications_count() {
        assert_eq!(head_of("public 42", "public"), Some(42));
        assert_eq!(head_of("tenant_a 42", "public"), None);
        assert_eq!(head_of("public x", "public"), None);
        assert_eq!(head_of("", "public"), None);
    }
}
