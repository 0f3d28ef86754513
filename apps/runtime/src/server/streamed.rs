//! Response bodies written by blocking code while they are being sent: a
//! `Write` on one side, an HTTP body on the other, a small bounded channel
//! between them. Large artifacts (a replay of 100,000 events) are sent in
//! 64 KiB chunks instead of being built whole in memory first.

use crate::core::Core;
use axum::body::{Body, Bytes};
use http_body::Frame;
use std::fmt::Display;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is handed to the connection.
const CHUNK_BYTES: usize = 64 << 10;
/// Chunks in flight between the writer and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A writer feeding the returned body. Use it from blocking code only.
fn streamed_body() -> (ChunkWriter, Body) {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let writer = ChunkWriter {
        sender,
        buffer: Vec::with_capacity(CHUNK_BYTES),
    };
    (writer, Body::new(ChannelBody { receiver }))
}

/// A body that `write` produces on a blocking thread while it is sent; a
/// failure part way ends the transfer broken rather than truncated.
pub(crate) fn blocking_body<E: Display>(
    core: Arc<Core>,
    write: impl FnOnce(&Core, &mut ChunkWriter) -> Result<(), E> + Send + 'static,
) -> Body {
    let (mut writer, body) = streamed_body();
    tokio::task::spawn_blocking(move || {
        let written = write(&core, &mut writer);
        // Let go of the core before the client sees the end of the body, so
        // that a shutdown right after it never waits on this task.
        drop(core);
        match written {
            Ok(()) => writer.finish(),
            Err(error) => writer.abort(error.to_string()),
        }
    });
    body
}

/// The writing end. Dropping it without [`ChunkWriter::finish`] ends the
/// body after what was already sent.
pub(crate) struct ChunkWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Sends what is buffered; the body then ends.
    pub(crate) fn finish(mut self) {
        let _ = self.send_buffer();
    }

    /// Ends the body with an error, so the client sees a broken transfer
    /// rather than a complete-looking truncated artifact.
    pub(crate) fn abort(self, reason: String) {
        tracing::error!(%reason, "streaming a response body failed");
        let _ = self.sender.blocking_send(Err(io::Error::other(reason)));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// The reading end, as an HTTP body.
struct ChannelBody {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}
