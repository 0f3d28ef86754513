//! The real binary on a loopback port, driven over plain HTTP/1.1 with one
//! connection per request.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// The binary on the embedded log under `data`.
    pub fn start(data: &Path) -> Self {
        Self::start_in(data, &[])
    }

    /// The binary on the embedded log under `data`, with `env` added.
    pub fn start_in(data: &Path, env: &[(&str, &str)]) -> Self {
        let mut vars = vec![
            (
                "RUNTIME_EVENT_LOG_PATH",
                data.join("events.jsonl").display().to_string(),
            ),
            (
                "RUNTIME_CHECKPOINT_PATH",
                data.join("projections.json").display().to_string(),
            ),
        ];
        vars.extend(env.iter().map(|(name, value)| (*name, value.to_string())));
        Self::start_with(&vars)
    }

    /// The binary with `env` added to its environment, once it is ready.
    pub fn start_with(env: &[(&str, String)]) -> Self {
        // Ask the OS for a free port, then hand it to the binary.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_at(&format!("127.0.0.1:{port}"), env)
    }

    /// The binary listening on `addr` (where an earlier one listened, to
    /// test a restart as its clients see it), once it is ready.
    pub fn start_at(addr: &str, env: &[(&str, String)]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_openagents-runtime-service"))
            .env("RUNTIME_BIND_ADDR", addr)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            addr: addr.to_owned(),
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok((200, _)) = self.try_call("GET", "/readyz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the service did not become ready");
    }

    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        self.request(method, path, body, "")
    }

    /// A GET with a bearer token.
    pub fn call_authorized(&self, path: &str, bearer: &str) -> (u16, Value) {
        let header = format!("authorization: Bearer {bearer}\r\n");
        self.request("GET", path, None, &header).unwrap()
    }

    /// A request with extra header lines, each ending in CRLF.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &str,
    ) -> (u16, Value) {
        self.request(method, path, body, headers).unwrap()
    }

    /// One request on a new connection; `headers` are extra header lines,
    /// each ending in CRLF.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &str,
    ) -> std::io::Result<(u16, Value)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, body) = self.request_text(method, path, &body, headers)?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// A request whose body is sent exactly as given (malformed JSON, say),
    /// with extra header lines, each ending in CRLF.
    pub fn call_raw(&self, method: &str, path: &str, body: &str, headers: &str) -> (u16, Value) {
        let (status, body) = self.request_text(method, path, body, headers).unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A GET whose body is returned as text (e.g. `/metrics`).
    pub fn raw(&self, path: &str) -> (u16, String) {
        self.request_text("GET", path, "", "").unwrap()
    }

    /// One request on a new connection: the status and the body as text
    /// (de-chunked when streamed).
    fn request_text(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &str,
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.addr)?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .and_then(|(head, body)| {
                let chunked = head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked");
                if chunked {
                    dechunk(body)
                } else {
                    Some(body.to_owned())
                }
            })
            .unwrap_or_default();
        Ok((status, body))
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body.as_ref()).unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The payload of a `Transfer-Encoding: chunked` body (streamed responses).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}
