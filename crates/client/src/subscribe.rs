//! Following a Khala topic over SSE or WebSocket: reconnects with jittered
//! backoff from the server's recommended delay, a hook to persist the
//! cursor, and a re-bootstrap callback on `stale_cursor`.
//!
//! The subscription keeps the last sequence delivered and reconnects from
//! it, so a message is delivered once and in order across reconnects: one at
//! or below the cursor (a resent message) is skipped.

use crate::backoff::Backoff;
use crate::client::Client;
use crate::error::{ApiError, ClientError};
use crate::http::{Call, path_segment, transport};
use crate::sse::{Block, Parser};
use crate::types::{Message, StaleCursor};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// The reconnect delay used until the server recommends one.
const DEFAULT_RECONNECT: Duration = Duration::from_secs(1);
/// The longest delay between two reconnects.
const MAX_RECONNECT: Duration = Duration::from_secs(30);
/// A stream silent this long is taken as lost: the server sends a
/// keep-alive every 15 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Most bytes of one WebSocket message.
const MAX_WS_MESSAGE: usize = 16 << 20;

/// The lane a subscription follows its topic over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// `GET /internal/v1/khala/topics/{topic}/stream`, Server-Sent Events.
    #[default]
    Sse,
    /// `GET /internal/v1/khala/topics/{topic}/ws`, a WebSocket.
    WebSocket,
}

type CursorHook = Box<dyn FnMut(u64) + Send>;
type StaleFuture = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;
type StaleHook = Box<dyn FnMut(StaleCursor) -> StaleFuture + Send>;

/// A subscription being set up; [`Subscribe::start`] starts it.
pub struct Subscribe {
    client: Client,
    topic: String,
    cursor: u64,
    lane: Lane,
    token: Option<String>,
    limit: Option<u32>,
    on_cursor: Option<CursorHook>,
    on_stale: Option<StaleHook>,
    max_failures: u32,
}

impl Subscribe {
    pub(crate) fn new(client: Client, topic: &str, cursor: u64) -> Self {
        Subscribe {
            client,
            topic: topic.to_owned(),
            cursor,
            lane: Lane::Sse,
            token: None,
            limit: None,
            on_cursor: None,
            on_stale: None,
            max_failures: 20,
        }
    }

    /// Follows over `lane` (default SSE).
    pub fn lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// The sync token to read the topic with.
    pub fn sync_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How many messages the server reads per page (1..=500).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Called with the cursor after each message is delivered (and after a
    /// re-bootstrap), to persist it; a later subscription starts from it.
    pub fn on_cursor(mut self, hook: impl FnMut(u64) + Send + 'static) -> Self {
        self.on_cursor = Some(Box::new(hook));
        self
    }

    /// Called when the cursor is below the topic's retained window: the
    /// caller re-bootstraps (from `GET /internal/v1/runs/{id}`, say) and
    /// answers the cursor to follow on from, or `None` to end the
    /// subscription with [`ClientError::Stale`]. Without it, a stale cursor
    /// ends the subscription.
    pub fn on_stale<F, Fut>(mut self, mut rebootstrap: F) -> Self
    where
        F: FnMut(StaleCursor) -> Fut + Send + 'static,
        Fut: Future<Output = Option<u64>> + Send + 'static,
    {
        self.on_stale = Some(Box::new(move |stale| Box::pin(rebootstrap(stale))));
        self
    }

    /// Gives up after `n` failed connections in a row (default 20); a
    /// delivered message resets the count.
    pub fn max_consecutive_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// The subscription; it connects on the first [`Subscription::next`].
    pub fn start(self) -> Subscription {
        Subscription {
            setup: self,
            connection: None,
            backoff: Backoff::new(DEFAULT_RECONNECT, MAX_RECONNECT),
            recommended: DEFAULT_RECONNECT,
            failures: 0,
        }
    }
}

/// A running subscription: [`Subscription::next`] yields the topic's
/// messages in order, reconnecting as needed.
pub struct Subscription {
    setup: Subscribe,
    connection: Option<Connection>,
    backoff: Backoff,
    recommended: Duration,
    failures: u32,
}

impl Subscription {
    /// The last sequence delivered (or the starting cursor).
    pub fn cursor(&self) -> u64 {
        self.setup.cursor
    }

    /// The next message after the cursor. Errors only when the subscription
    /// is over: a refusal a retry cannot fix (401, 403, 400), a stale cursor
    /// without a new one, or too many failed connections in a row.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        loop {
            let frame = match &mut self.connection {
                Some(connection) => connection.next_frame().await,
                None => match self.dial().connect().await {
                    Ok(connection) => {
                        self.connection = Some(connection);
                        continue;
                    }
                    Err(error) => Err(error),
                },
            };
            match frame {
                Ok(Frame::Message(message)) => {
                    if message.sequence <= self.setup.cursor {
                        continue;
                    }
                    self.failures = 0;
                    self.backoff.reset(self.recommended);
                    self.moved_to(message.sequence);
                    return Ok(message);
                }
                Ok(Frame::Retry(delay)) => {
                    self.recommended = delay;
                    self.backoff.reset(delay);
                }
                Ok(Frame::Stale(stale)) | Err(ClientError::Stale(stale)) => {
                    self.connection = None;
                    self.rebootstrap(stale).await?;
                }
                Ok(Frame::Ended(code)) => {
                    self.connection = None;
                    self.failed(ClientError::Transport(format!("the stream ended: {code}")))
                        .await?;
                }
                Err(error) => {
                    self.connection = None;
                    self.failed(error).await?;
                }
            }
        }
    }

    fn moved_to(&mut self, cursor: u64) {
        self.setup.cursor = cursor;
        if let Some(hook) = &mut self.setup.on_cursor {
            hook(cursor);
        }
    }

    async fn rebootstrap(&mut self, stale: StaleCursor) -> Result<(), ClientError> {
        let Some(hook) = &mut self.setup.on_stale else {
            return Err(ClientError::Stale(stale));
        };
        match hook(stale.clone()).await {
            Some(cursor) => {
                self.moved_to(cursor);
                Ok(())
            }
            None => Err(ClientError::Stale(stale)),
        }
    }

    /// Waits out the backoff after a retriable failure; gives the error back
    /// when it is not retriable or too many came in a row.
    async fn failed(&mut self, error: ClientError) -> Result<(), ClientError> {
        self.failures += 1;
        if !error.is_retriable() || self.failures > self.setup.max_failures {
            return Err(error);
        }
        tokio::time::sleep(self.backoff.next_delay()).await;
        Ok(())
    }

    /// What a connection needs, owned, so that connecting holds no borrow
    /// of the subscription (whose hooks need not be `Sync`).
    fn dial(&self) -> Dial {
        let setup = &self.setup;
        let mut query = format!("after_seq={}", setup.cursor);
        if let Some(limit) = setup.limit {
            query.push_str(&format!("&limit={limit}"));
        }
        Dial {
            client: setup.client.clone(),
            lane: setup.lane,
            topic: path_segment(&setup.topic),
            query,
            token: setup.token.clone(),
        }
    }
}

/// One connection attempt of a subscription.
struct Dial {
    client: Client,
    lane: Lane,
    /// The topic, encoded for the path.
    topic: String,
    query: String,
    token: Option<String>,
}

impl Dial {
    fn path(&self, lane: &str) -> String {
        format!(
            "/internal/v1/khala/topics/{}/{lane}?{}",
            self.topic, self.query
        )
    }

    async fn connect(self) -> Result<Connection, ClientError> {
        match self.lane {
            Lane::Sse => self.connect_sse().await,
            Lane::WebSocket => self.connect_ws().await,
        }
    }

    async fn connect_sse(&self) -> Result<Connection, ClientError> {
        let client = &self.client;
        let path = self.path("stream");
        let call = Call {
            method: &Method::GET,
            path: &path,
            body: None,
            bearer: self.token.as_deref(),
            accept: "text/event-stream",
        };
        let response = client.endpoint.open(call, client.timeout).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(transport)?
                .to_bytes();
            return Err(refusal(ApiError::from_body(status, &body)));
        }
        Ok(Connection::Sse {
            body: response.into_body(),
            parser: Parser::default(),
        })
    }

    async fn connect_ws(&self) -> Result<Connection, ClientError> {
        let client = &self.client;
        let url = format!("ws://{}{}", client.endpoint.authority(), self.path("ws"));
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::InvalidUrl(e.to_string()))?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::InvalidUrl("the token is not visible ASCII".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let stream = client.endpoint.connect(client.timeout).await?;
        let config = WebSocketConfig::default().max_message_size(Some(MAX_WS_MESSAGE));
        let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        match tokio::time::timeout(client.timeout, handshake).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Ok((socket, _))) => Ok(Connection::Ws(Box::new(socket))),
            Ok(Err(WsError::Http(response))) => {
                let body = response.body().as_deref().unwrap_or_default();
                Err(refusal(ApiError::from_body(
                    response.status().as_u16(),
                    body,
                )))
            }
            Ok(Err(error)) => Err(transport(error)),
        }
    }
}

/// A refused subscription: a 410 is the stale cursor, anything else as is.
fn refusal(error: ApiError) -> ClientError {
    if error.status == 410
        && let Ok(stale) = serde_json::from_value(error.details.clone())
    {
        return ClientError::Stale(stale);
    }
    error.into()
}

/// What a lane said next.
enum Frame {
    Message(Message),
    Stale(StaleCursor),
    /// The server's recommended reconnect delay.
    Retry(Duration),
    /// The server ended the stream with this code (`slow_consumer`,
    /// `shutting_down`, `unavailable`): resume from the cursor.
    Ended(String),
}

/// One open stream.
enum Connection {
    Sse { body: Incoming, parser: Parser },
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// A WebSocket frame of the Khala lane.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WsFrame {
    Hello {
        recommended_reconnect_backoff_ms: u64,
    },
    Message {
        message: Message,
    },
    StaleCursor(StaleCursor),
    Error {
        code: String,
    },
}

/// The `data` of an SSE `error` event.
#[derive(Deserialize)]
struct SseError {
    code: String,
}

impl Connection {
    /// The next frame; an error when the connection is lost or went silent.
    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        match self {
            Connection::Sse { body, parser } => next_sse(body, parser).await,
            Connection::Ws(socket) => next_ws(socket).await,
        }
    }
}

async fn next_sse(body: &mut Incoming, parser: &mut Parser) -> Result<Frame, ClientError> {
    loop {
        if let Some(block) = parser.next_block()? {
            let event = match block {
                Block::Retry(ms) => return Ok(Frame::Retry(Duration::from_millis(ms))),
                Block::Event(event) => event,
            };
            let data = event.data.as_bytes();
            return match event.event.as_str() {
                "message" => Ok(Frame::Message(decode(data)?)),
                "stale_cursor" => Ok(Frame::Stale(decode(data)?)),
                "error" => Ok(Frame::Ended(decode::<SseError>(data)?.code)),
                other => Err(ClientError::Decode(format!(
                    "unknown SSE event {other:.32}"
                ))),
            };
        }
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| ClientError::Timeout)?
            .ok_or_else(|| ClientError::Transport("the stream closed".into()))?
            .map_err(transport)?;
        if let Ok(data) = frame.into_data() {
            parser.push(&data)?;
        }
    }
}

async fn next_ws(socket: &mut WebSocketStream<TcpStream>) -> Result<Frame, ClientError> {
    loop {
        let message = tokio::time::timeout(IDLE_TIMEOUT, socket.next())
            .await
            .map_err(|_| ClientError::Timeout)?
            .ok_or_else(|| ClientError::Transport("the socket closed".into()))?
            .map_err(transport)?;
        let text = match message {
            WsMessage::Text(text) => text,
            WsMessage::Close(_) => return Err(ClientError::Transport("the socket closed".into())),
            // Pings are answered by the socket itself.
            _ => continue,
        };
        return Ok(match decode::<WsFrame>(text.as_bytes())? {
            WsFrame::Hello {
                recommended_reconnect_backoff_ms,
            } => Frame::Retry(Duration::from_millis(recommended_reconnect_backoff_ms)),
            WsFrame::Message { message } => Frame::Message(message),
            WsFrame::StaleCursor(stale) => Frame::Stale(stale),
            WsFrame::Error { code } => Frame::Ended(code),
        });
    }
}

fn decode<T: serde::de::DeserializeOwned>(data: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(data).map_err(|e| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_can_be_followed_from_a_spawned_task() {
        fn spawnable<T: Send + 'static>(_: &T) {}
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let mut subscription = client
            .subscribe("runtime.codex_worker_events", 0)
            .on_cursor(|_| {})
            .on_stale(|_| async { None })
            .start();
        let next = async move { subscription.next().await };
        spawnable(&next);
    }
}
