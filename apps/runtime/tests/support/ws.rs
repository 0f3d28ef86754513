//! A blocking WebSocket client for the Khala WebSocket tests.

use serde_json::Value;
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub enum Opened {
    Socket(Box<Socket>),
    Refused(u16, Value),
}

impl Opened {
    pub fn socket(self) -> Socket {
        match self {
            Opened::Socket(socket) => *socket,
            Opened::Refused(status, body) => panic!("refused with {status}: {body}"),
        }
    }
}

pub struct Socket {
    inner: WebSocket<TcpStream>,
    /// The close code, once the server closed.
    pub closed_with: Option<u16>,
}

/// Opens `path` on `addr`, with a bearer token when given.
pub fn open(addr: &str, path: &str, bearer: Option<&str>) -> Opened {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(bearer) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    }
    match tungstenite::client(request, stream) {
        Ok((inner, _)) => Opened::Socket(Box::new(Socket {
            inner,
            closed_with: None,
        })),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or(Value::Null);
            Opened::Refused(response.status().as_u16(), body)
        }
        Err(error) => panic!("handshake failed: {error}"),
    }
}

impl Socket {
    /// The next JSON frame (pings skipped); `None` once closed.
    pub fn next_frame(&mut self) -> Option<Value> {
        loop {
            match self.inner.read() {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(frame)) => {
                    self.closed_with = frame.map(|frame| u16::from(frame.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// The sequences of the next `n` message frames.
    pub fn sequences(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let frame = self.next_frame().expect("the socket stays open");
                assert_eq!(frame["type"], "message", "{frame}");
                frame["message"]["sequence"].as_u64().unwrap()
            })
            .collect()
    }

    pub fn close(mut self) {
        let _ = self.inner.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
    }
}
