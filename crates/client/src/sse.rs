//! An incremental `text/event-stream` parser: bytes in, events out, with a
//! bound on how much one event may hold.

use crate::error::ClientError;

/// Most bytes one event may take before the stream is refused: above the
/// service's largest message (its body limit is 1 MiB by default).
const MAX_EVENT_BYTES: usize = 16 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `event:`, `message` when absent.
    pub(crate) event: String,
    /// `id:`, when the block had one.
    pub(crate) id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub(crate) data: String,
}

/// What one block of fields said: an event, or a new reconnect delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    Event(SseEvent),
    Retry(u64),
}

/// Bytes received and not yet split into blocks.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    pending: Vec<u8>,
}

impl Parser {
    /// Adds received bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > MAX_EVENT_BYTES {
            return Err(ClientError::Decode("an SSE event exceeds 16 MiB".into()));
        }
        Ok(())
    }

    /// The next complete block, comments and empty blocks skipped.
    pub(crate) fn next_block(&mut self) -> Result<Option<Block>, ClientError> {
        while let Some(end) = block_end(&self.pending) {
            let block: Vec<u8> = self.pending.drain(..end.1).collect();
            let text = std::str::from_utf8(&block[..end.0])
                .map_err(|_| ClientError::Decode("an SSE event is not UTF-8".into()))?;
            if let Some(block) = parse_block(text) {
                return Ok(Some(block));
            }
        }
        Ok(None)
    }
}

/// Where the first block ends: (end of its text, end of its blank line).
fn block_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_block(text: &str) -> Option<Block> {
    let mut event = SseEvent {
        event: "message".to_owned(),
        id: None,
        data: String::new(),
    };
    let (mut dispatch, mut retry) = (false, None);
    for line in text.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => event.event = value.to_owned(),
            "id" => event.id = Some(value.to_owned()),
            "data" => {
                if dispatch {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                dispatch = true;
            }
            "retry" => retry = value.parse().ok(),
            _ => {}
        }
    }
    // As in an `EventSource`: a block without data dispatches no event.
    if dispatch {
        Some(Block::Event(event))
    } else {
        retry.map(Block::Retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut parser = Parser::default();
        parser
            .push(b"retry: 1000\n\n: keep-alive\n\nid: 7\nda")
            .unwrap();
        assert_eq!(parser.next_block().unwrap(), Some(Block::Retry(1000)));
        assert_eq!(parser.next_block().unwrap(), None);
        parser
            .push(b"ta: {\"a\":1}\n\nevent: stale_cursor\r\ndata: {}\r\n\r\n")
            .unwrap();
        let Some(Block::Event(event)) = parser.next_block().unwrap() else {
            panic!("no event");
        };
        assert_eq!(
            (
                event.event.as_str(),
                event.id.as_deref(),
                event.data.as_str()
            ),
            ("message", Some("7"), "{\"a\":1}")
        );
        let Some(Block::Event(event)) = parser.next_block().unwrap() else {
            panic!("no event");
        };
        assert_eq!(event.event, "stale_cursor");
        assert_eq!(parser.next_block().unwrap(), None);
    }

    #[test]
    fn refuses_an_event_without_end() {
        let mut parser = Parser::default();
        let chunk = vec![b'x'; 1 << 20];
        let refused = (0..17).any(|_| parser.push(&chunk).is_err());
        assert!(refused);
    }
}
