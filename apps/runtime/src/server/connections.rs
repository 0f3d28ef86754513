//! The accept loop: one HTTP/1.1 connection per socket, served by hyper
//! directly (with upgrades, for the Khala WebSocket lane), and tracked so
//! that a shutdown lets in-flight requests finish.
//!
//! hyper is driven directly rather than through `axum::serve`, whose
//! per-connection machinery (protocol detection, HTTP/2) costs memory for
//! every open connection: with thousands of idle long-polls that is most of
//! the service's memory (`docs/PERFORMANCE.md`, khala-longpoll). Upgrades
//! cost one small wrapper per connection (hyper's `with_upgrades`).
//!
//! Slow or hostile clients are bounded here (request bodies are bounded in
//! `server/body.rs`):
//!
//! - at most `RUNTIME_MAX_CONNECTIONS` connections are served; one arriving
//!   beyond that is closed at once, so the process keeps serving what it
//!   accepted;
//! - when the process runs out of file descriptors, accepting pauses
//!   briefly and resumes (10 ms, doubling up to 1 s) instead of spinning or
//!   exiting;
//! - request headers must arrive within `RUNTIME_HEADER_READ_TIMEOUT_MS`
//!   (hyper's header-read timeout, which also ends an idle keep-alive
//!   connection);
//! - a write that makes no progress for `RUNTIME_WRITE_TIMEOUT_MS` (a client
//!   that pipelines requests and never reads the answers) drops the
//!   connection.
//!
//! The read buffer of a connection is 64 KiB, which bounds a request head.
//! hyper answers a request it cannot parse (a head that fills the buffer, a
//! NUL byte in a header) on its own, with a status line and no body, before
//! any service sees it. [`GuardedStream`] recognises that answer on its way
//! out — a 400, 414 or 431 head without the `x-request-id` header that every
//! response of the router carries — and sends the contract's JSON envelope
//! in its place (414 when the buffer filled before the request line ended);
//! hyper closes the connection after it either way.

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use axum::Router;
use axum::http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};

/// First pause after an accept error that is not about one connection
/// (out of file descriptors, say); doubled on each error in a row.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause after accept errors in a row.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Largest read buffer of a connection, and so the largest request head:
/// hyper's default (~400 KiB) let a few hundred clients that send fast and
/// are then refused hold over 100 MiB between them.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Least time between two warnings about shed connections.
const SHED_WARNING_EVERY: Duration = Duration::from_secs(5);

/// The per-connection bounds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// `RUNTIME_MAX_CONNECTIONS`.
    pub(crate) max_connections: usize,
    /// `RUNTIME_HEADER_READ_TIMEOUT_MS`.
    pub(crate) header_read_timeout: Duration,
    /// `RUNTIME_WRITE_TIMEOUT_MS`.
    pub(crate) write_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &Config) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// Serves `app` on `listener` until `stop` fires; then stops accepting and
/// waits for every open connection to finish its in-flight request.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(READ_BUFFER_BYTES);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // hyper-util's `GracefulShutdown` cannot watch a connection with
    // upgrades, so the same two signals are kept here: `closing` asks every
    // connection to finish, and each holds a `done` sender until it has.
    let (closing, closing_watch) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut pause = ACCEPT_PAUSE_MIN;
    let mut last_shed_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    pause = ACCEPT_PAUSE_MIN;
                    let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                        // Closing it here frees its descriptor at once.
                        drop(stream);
                        metrics.connection_shed();
                        if last_shed_warning.is_none_or(|at| at.elapsed() >= SHED_WARNING_EVERY) {
                            last_shed_warning = Some(Instant::now());
                            tracing::warn!(
                                max_connections = limits.max_connections,
                                "RUNTIME_MAX_CONNECTIONS connections are open; closing new ones"
                            );
                        }
                        continue;
                    };
                    // Answers are small and latency matters more than packets.
                    let _ = stream.set_nodelay(true);
                    let stream = GuardedStream::new(stream, limits.write_timeout);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let mut closing = closing_watch.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        let mut connection = std::pin::pin!(connection);
                        let finished = tokio::select! {
                            result = connection.as_mut() => Some(result),
                            _ = closing.wait_for(|closing| *closing) => None,
                        };
                        let result = match finished {
                            Some(result) => result,
                            None => {
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(error) = result {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        drop(permit);
                        drop(done);
                    });
                }
                Err(error) if is_per_connection(&error) => {}
                Err(error) => {
                    if pause == ACCEPT_PAUSE_MIN {
                        tracing::error!(%error, "accepting connections failed; pausing and retrying");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    closing.send_replace(true);
    drop(done);
    // Every sender is gone once every connection has finished.
    let _ = all_done.recv().await;
}

/// Errors that concern one connection that went away before it was
/// accepted, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// A client's socket with a write timeout, which also swaps hyper's bodiless
/// answer to an unparsable request for the JSON envelope.
struct GuardedStream {
    inner: TcpStream,
    write_timeout: Duration,
    /// Running while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
    swap: Swap,
    /// No line end has arrived since the last response went out: the
    /// request line of the request being read is still open. A 431 from
    /// hyper then means the request target filled the buffer: a 414.
    request_line_open: bool,
}

/// Where the swap of hyper's answer for the envelope stands.
enum Swap {
    /// Nothing swapped: writes go through.
    Idle,
    /// The envelope is being written in place of an answer of `replaced`
    /// bytes; `written` of its bytes are out.
    Writing {
        envelope: Vec<u8>,
        written: usize,
        replaced: usize,
    },
    /// The envelope is out; the connection ends, later writes are dropped.
    Done,
}

impl GuardedStream {
    fn new(inner: TcpStream, write_timeout: Duration) -> Self {
        GuardedStream {
            inner,
            write_timeout,
            stalled: None,
            swap: Swap::Idle,
            request_line_open: true,
        }
    }

    /// Turns a write that is waiting into an error once it has waited for
    /// the write timeout; a write that completes resets the clock.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its responses within RUNTIME_WRITE_TIMEOUT_MS",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled()[before..].contains(&b'\n') {
            self.request_line_open = false;
        }
        poll
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if matches!(this.swap, Swap::Idle)
            && let Some(mut status) = hyper_parse_error_answer(buf)
        {
            if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE && this.request_line_open {
                status = StatusCode::URI_TOO_LONG;
            }
            this.swap = Swap::Writing {
                envelope: envelope_response(status),
                written: 0,
                replaced: buf.len(),
            };
        }
        loop {
            match &this.swap {
                Swap::Idle => {
                    let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
                    if matches!(poll, Poll::Ready(Ok(_))) {
                        this.request_line_open = true;
                    }
                    return this.bound(cx, poll);
                }
                Swap::Done => return Poll::Ready(Ok(buf.len())),
                Swap::Writing {
                    envelope,
                    written,
                    replaced,
                } => {
                    if *written == envelope.len() {
                        let replaced = *replaced;
                        this.swap = Swap::Done;
                        return Poll::Ready(Ok(replaced));
                    }
                    let poll = Pin::new(&mut this.inner).poll_write(cx, &envelope[*written..]);
                    let n = ready!(this.bound(cx, poll))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    if let Swap::Writing { written, .. } = &mut this.swap {
                        *written += n;
                    }
                }
            }
        }
    }

    /// Vectored writes go through as they did before the wrapper (hyper
    /// then queues bodies instead of copying them behind the head); an
    /// answer of hyper's own is always one whole buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut written = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(first), None) = (written.next(), written.next())
            && (!matches!(self.swap, Swap::Idle) || hyper_parse_error_answer(first).is_some())
        {
            return self.poll_write(cx, first);
        }
        if !matches!(self.swap, Swap::Idle) {
            let total = bufs.iter().map(|buf| buf.len()).sum();
            return Poll::Ready(Ok(total));
        }
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(_))) {
            this.request_line_open = true;
        }
        this.bound(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The status of `buf` when it is hyper's own answer to a request it could
/// not parse: a whole response head with status 400, 414 or 431, no body
/// and no `x-request-id` header (which every response of the router has).
fn hyper_parse_error_answer(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let head_end = buf.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = buf[..head_end].to_ascii_lowercase();
    let bodiless = buf.len() == head_end + 4;
    let from_router = head
        .windows(b"\r\nx-request-id:".len())
        .any(|window| window == b"\r\nx-request-id:");
    (bodiless && !from_router).then_some(status)
}

/// A whole HTTP/1.1 response carrying the envelope for `status`; it closes
/// the connection, as hyper does after a request it could not parse.
fn envelope_response(status: StatusCode) -> Vec<u8> {
    let body = ApiError::unparsable(status).to_json_bytes();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
        uuid::Uuid::now_v7(),
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_answers_are_recognised() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            hyper_parse_error_answer(hyper),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let router = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\n\r\n";
        assert_eq!(hyper_parse_error_answer(router), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(hyper_parse_error_answer(with_body), None);
        assert_eq!(hyper_parse_error_answer(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(hyper_parse_error_answer(b"{\"HTTP/1.1 400 \"}"), None);
    }

    #[test]
    fn the_replacement_is_a_whole_response_with_the_envelope() {
        let response = envelope_response(StatusCode::URI_TOO_LONG);
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "uri_too_long");
    }
}
