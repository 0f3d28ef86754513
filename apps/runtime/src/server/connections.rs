//! The accept loop: one HTTP/1.1 connection per socket, served by hyper
//! directly, and tracked so that a shutdown lets in-flight requests finish.
//!
//! hyper is driven directly rather than through `axum::serve`, whose
//! per-connection machinery (protocol detection, upgrades) costs memory for
//! every open connection: with thousands of idle long-polls that is most of
//! the service's memory (`docs/PERFORMANCE.md`, khala-longpoll).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long the loop pauses after an accept error that is not about one
/// connection (too many open files, say), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop` fires; then stops accepting and
/// waits for every open connection to finish its in-flight request.
pub(crate) async fn serve(listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
    let mut builder = http1::Builder::new();
    // The timer bounds how long a client may take to send request headers.
    builder.timer(TokioTimer::new());
    let connections = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Answers are small and latency matters more than packets.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let connection = connections.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Err(error) if is_per_connection(&error) => {}
                Err(error) => {
                    tracing::error!(%error, "accepting connections failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Errors that concern one connection that went away before it was
/// accepted, not the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
