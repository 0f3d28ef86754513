//! One HTTP/1.1 exchange on a fresh connection, over hyper's client
//! connection: what every call and every SSE stream is built on.
//!
//! A fresh connection per call keeps a retry simple to reason about: a
//! connection that failed is never reused, and a lost answer is always
//! seen as a lost connection.

use crate::error::{ApiError, ClientError};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Most bytes of a non-streamed answer the client reads (the service's own
/// pages stay far below it).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Where the service listens: `host:port`, from an `http://` base URL.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    authority: String,
}

impl Endpoint {
    /// Parses `http://host:port` (a trailing `/` allowed, no path).
    pub(crate) fn parse(base_url: &str) -> Result<Self, ClientError> {
        let invalid = |why: &str| ClientError::InvalidUrl(format!("{why}: {base_url:.64}"));
        let uri: Uri = base_url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("the base URL takes no path or query"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{authority}:80"),
        };
        Ok(Endpoint { authority })
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// A connected TCP stream, within `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<TcpStream, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(transport)?;
        stream.set_nodelay(true).map_err(transport)?;
        Ok(stream)
    }

    /// Sends one request and returns the response head, its body still to
    /// be read, within `timeout` for the head.
    pub(crate) async fn open(
        &self,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ClientError> {
        let exchange = async {
            let stream = self.connect(timeout).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(transport)?;
            // The connection is driven until the body is read or dropped.
            tokio::spawn(connection);
            sender
                .send_request(call.request(&self.authority)?)
                .await
                .map_err(transport)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Sends one request and reads the whole answer: the body of a 2xx, or
    /// the error envelope of any other status.
    pub(crate) async fn send(
        &self,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let exchange = async {
            let response = self.open(call, timeout).await?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(body)
            } else {
                Err(ApiError::from_body(status.as_u16(), &body).into())
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout)?
    }
}

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) body: Option<&'a Bytes>,
    pub(crate) bearer: Option<&'a str>,
    pub(crate) accept: &'static str,
}

impl Call<'_> {
    fn request(&self, authority: &str) -> Result<Request<Full<Bytes>>, ClientError> {
        let header = |value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| ClientError::InvalidUrl("a header value is not visible ASCII".into()))
        };
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(HOST, header(authority)?)
            .header(ACCEPT, self.accept);
        if let Some(token) = self.bearer {
            request = request.header(AUTHORIZATION, header(&format!("Bearer {token}"))?);
        }
        if self.body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = self.body.cloned().unwrap_or_default();
        request
            .body(Full::new(body))
            .map_err(|e| ClientError::InvalidUrl(e.to_string()))
    }
}

pub(crate) fn transport(error: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(error.to_string())
}

/// `segment` percent-encoded for a URL path: everything but unreserved
/// characters and `:` (which topics are spelled with).
pub(crate) fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(endpoint.authority(), "127.0.0.1:8080");
        assert_eq!(
            Endpoint::parse("http://localhost").unwrap().authority(),
            "localhost:80"
        );
        for bad in [
            "https://h:1",
            "h:1",
            "http://h:1/api",
            "http://h:1/?a=1",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_keep_topics_readable() {
        assert_eq!(path_segment("run:ab-1:events"), "run:ab-1:events");
        assert_eq!(
            path_segment("worker:a?b#c%:lifecycle"),
            "worker:a%3Fb%23c%25:lifecycle"
        );
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
