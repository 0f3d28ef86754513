//! A blocking SSE client over one TCP connection, for the Khala stream
//! tests: it sends a GET, then reads the chunked body event by event.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One SSE event: its `event:` name (`message` when absent), `id:` and
/// `data:`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open stream, or the refusal it was answered with.
pub enum Opened {
    Stream(SseStream),
    Refused(u16, Value, Vec<(String, String)>),
}

impl Opened {
    pub fn stream(self) -> SseStream {
        match self {
            Opened::Stream(stream) => stream,
            Opened::Refused(status, body, _) => panic!("refused with {status}: {body}"),
        }
    }
}

pub struct SseStream {
    reader: BufReader<TcpStream>,
    /// Decoded body bytes not yet split into events.
    pending: String,
    pub headers: Vec<(String, String)>,
    ended: bool,
}

/// Opens `path` on `addr` with extra header lines (each ending in CRLF).
pub fn open(addr: &str, path: &str, headers: &str) -> Opened {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n{headers}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut head = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        head.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let chunked = head
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let mut sse = SseStream {
        reader,
        pending: String::new(),
        headers: head.clone(),
        ended: false,
    };
    if status == 200 {
        assert!(chunked, "a stream is chunked: {head:?}");
        return Opened::Stream(sse);
    }
    let length = head
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<usize>().unwrap());
    let body = match length {
        Some(length) => {
            let mut body = vec![0; length];
            sse.reader.read_exact(&mut body).unwrap();
            String::from_utf8(body).unwrap()
        }
        None => {
            while sse.read_chunk() {}
            std::mem::take(&mut sse.pending)
        }
    };
    Opened::Refused(
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        head,
    )
}

impl SseStream {
    /// Reads one chunk into `pending`; false at the body's end.
    fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).unwrap() == 0 {
            return false;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        if size == 0 {
            return false;
        }
        self.pending
            .push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        true
    }

    /// The next event (comments skipped); `None` when the stream ended.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut fields = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    // As in an `EventSource`: a block of `retry:` alone
                    // dispatches no event.
                    fields |= matches!(name, "event" | "id" | "data");
                    match name {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if fields {
                    return Some(event);
                }
                continue;
            }
            if self.ended || !self.read_chunk() {
                self.ended = true;
                return None;
            }
        }
    }

    /// The sequences of the next `n` message events.
    pub fn sequences(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let event = self.next_event().expect("the stream goes on");
                assert_eq!(event.event, "message", "{event:?}");
                let sequence = event.json()["sequence"].as_u64().unwrap();
                assert_eq!(event.id.as_deref(), Some(sequence.to_string().as_str()));
                sequence
            })
            .collect()
    }
}
