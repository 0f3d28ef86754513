//! `openagents-client`: a typed async client of the runtime service, for the
//! programs that talk to it: agent runtimes that append, UIs and indexers
//! that follow topics.
//!
//! - [`Client`] creates runs, appends events, reads runs and pages of
//!   events. A write without an idempotency key gets a generated one
//!   (UUIDv7), and every retry of it (on a 503, a lost connection or a
//!   timeout, under [`RetryPolicy`]) sends that same key, so a retry never
//!   appends an event twice.
//! - [`Client::subscribe`] follows a Khala topic over SSE or WebSocket from
//!   a cursor: it reconnects with jittered backoff starting from the
//!   server's recommended delay, calls a hook with each new cursor so the
//!   caller can persist it, and on `stale_cursor` calls the caller's
//!   re-bootstrap callback.
//!
//! Appending, retried without duplicates:
//!
//! ```no_run
//! use openagents_client::{AppendEvent, Client, CreateRun};
//! use serde_json::json;
//!
//! # async fn example() -> Result<(), openagents_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:4100")?;
//! let run = client
//!     .create_run(&CreateRun { owner_user_id: Some(7), ..CreateRun::default() })
//!     .await?;
//! let appended = client
//!     .append(run.id, &AppendEvent::new("note", json!({"text": "hello"})))
//!     .await?;
//! assert_eq!(appended.event.seq, 2);
//! let page = client.events(run.id, 0, 100).await?;
//! assert_eq!(page.head_seq, 2);
//! # Ok(())
//! # }
//! ```
//!
//! Following a topic, persisting the cursor, re-bootstrapping when stale:
//!
//! ```no_run
//! use openagents_client::{Client, Lane};
//!
//! # async fn example(sync_token: String, saved: u64) -> Result<(), openagents_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:4100")?;
//! let mut subscription = client
//!     .subscribe("runs:user:7:events", saved)
//!     .lane(Lane::WebSocket)
//!     .sync_token(sync_token)
//!     .on_cursor(|cursor| println!("persist {cursor}"))
//!     .on_stale(|stale| async move {
//!         // Rebuild local state from another source, then follow on from
//!         // the head.
//!         Some(stale.head_cursor)
//!     })
//!     .start();
//! loop {
//!     let message = subscription.next().await?;
//!     println!("{} {}", message.sequence, message.kind);
//! }
//! # }
//! ```
//!
//! A delay stays within its step, as the retry policy sets it:
//!
//! ```
//! use openagents_client::RetryPolicy;
//! use std::time::Duration;
//!
//! let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
//! assert_eq!(policy.initial_delay, Duration::from_millis(100));
//! ```

mod backoff;
mod client;
mod error;
mod http;
mod sse;
mod subscribe;
mod types;

pub use backoff::RetryPolicy;
pub use client::Client;
pub use error::{ApiError, ClientError};
pub use subscribe::{Lane, Subscribe, Subscription};
pub use types::{
    AppendEvent, Appended, CreateRun, Event, EventsPage, Message, Owner, Run, StaleCursor,
};
