//! Handlers of the Khala routes: the poll route and the SSE and WebSocket
//! lanes, both over one `Subscription`.

use super::extract::{Authorization, Path, Query};
use crate::error::ApiError;
use crate::khala::KhalaError;
use crate::server::AppState;
use crate::subscription::{Ended, Subscription};
use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use openagents_khala::message::Message;
use openagents_khala::poll::PollParams;
use openagents_khala::topic::Topic;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often an idle SSE stream sends a comment, so proxies keep it open.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a WebSocket is pinged, so proxies keep it open.
const WS_PING: Duration = Duration::from_secs(15);
/// The reconnect delay a WebSocket's `hello` and an SSE stream's first
/// `retry:` field recommend.
const RECONNECT_BACKOFF_MS: u64 = 1000;
/// Close codes of the WebSocket lane, by how the stream ended.
const CLOSE_STALE_CURSOR: u16 = 4410;
/// The topic is gone for good (its run was erased), as HTTP's 410.
const CLOSE_RUN_ERASED: u16 = 4411;
const CLOSE_SLOW_CONSUMER: u16 = 4429;
const CLOSE_SHUTTING_DOWN: u16 = 1001;
const CLOSE_UNAVAILABLE: u16 = 1011;
/// Read buffer of one WebSocket: the client sends nothing but pongs and
/// closes, so a small one; tungstenite's default (128 KiB) would cost that
/// much per open socket.
const WS_READ_BUFFER: usize = 4 << 10;
/// Largest frame or message a client may send: what it makes the service
/// hold before the frame is ignored.
const WS_MAX_INCOMING: usize = 64 << 10;

/// The poll query, kept as text so the Khala crate's rules judge it.
#[derive(Debug, Deserialize)]
pub(crate) struct PollQuery {
    after_seq: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
}

/// `GET /internal/v1/khala/topics/{topic}/messages`.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    uri: Uri,
    Authorization(authorization): Authorization,
) -> Result<Json<Value>, ApiError> {
    let core = state.fresh_core().await?;
    let result = poll(core, &topic, &uri, &authorization).await;
    match &result {
        Ok(_) => state.metrics().khala_outcome(None),
        // A stale cursor's 410 has no reason code; an erased run's has.
        Err(error) if error.status().as_u16() == 410 && error.reason_code().is_none() => {
            state.metrics().khala_outcome(Some("stale_cursor"))
        }
        Err(error)
            if matches!(error.status().as_u16(), 401 | 403)
                || error.reason_code() == Some("sync_auth_not_configured") =>
        {
            let reason = error.reason_code().unwrap_or_default();
            // The reason code only: the token itself is never logged, and
            // the topic only as a short prefix.
            let topic = crate::error::clip(&topic);
            tracing::warn!(%topic, reason, "khala request denied");
            state.metrics().khala_outcome(Some(reason));
        }
        Err(_) => {}
    }
    let response = result?;
    Ok(Json(
        serde_json::to_value(response).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// Records a refused Khala request: its reason code only, never the token.
fn observe_refusal(state: &AppState, topic: &str, error: &ApiError) {
    if matches!(error.status().as_u16(), 401 | 403)
        || error.reason_code() == Some("sync_auth_not_configured")
    {
        let reason = error.reason_code().unwrap_or_default();
        let topic = crate::error::clip(topic);
        tracing::warn!(%topic, reason, "khala request denied");
        state.metrics().khala_outcome(Some(reason));
    }
}

/// The SSE query: the poll route's cursor and page size, and the token for
/// clients (browsers' `EventSource`) that cannot send a header.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    after_seq: Option<String>,
    limit: Option<String>,
    access_token: Option<String>,
}

/// `GET /internal/v1/khala/topics/{topic}/stream`: the topic's messages
/// after the cursor (`Last-Event-ID`, else `after_seq`), then live.
pub(crate) async fn stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<StreamQuery>,
    Authorization(authorization): Authorization,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let subscription = open(&state, &topic, &query, authorization, last_event_id).await?;
    // The first event only sets the reconnect delay (no data, so an
    // `EventSource` dispatches nothing for it).
    let retry = Event::default().retry(Duration::from_millis(RECONNECT_BACKOFF_MS));
    let events = futures_util::stream::unfold(
        Some((subscription, VecDeque::new(), Some(retry))),
        |open| async move {
            let (mut subscription, mut queue, retry) = open?;
            if let Some(retry) = retry {
                return Some((
                    Ok::<_, Infallible>(retry),
                    Some((subscription, queue, None)),
                ));
            }
            loop {
                if let Some(message) = queue.pop_front() {
                    let event = message_event(&message);
                    return Some((Ok(event), Some((subscription, queue, None))));
                }
                match subscription.next().await {
                    Ok(messages) => queue.extend(messages),
                    Err(ended) => return Some((Ok(final_event(ended)), None)),
                }
            }
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response())
}

/// Opens a subscription for a streaming lane: `cursor` (a resuming
/// client's last id) wins over `after_seq`, the header token over the query
/// token.
async fn open(
    state: &AppState,
    topic: &str,
    query: &StreamQuery,
    authorization: Vec<Box<[u8]>>,
    cursor: Option<String>,
) -> Result<Subscription, ApiError> {
    let core = Arc::clone(state.fresh_core().await?);
    let authorization = if authorization.is_empty() {
        query
            .access_token
            .iter()
            .map(|token| format!("Bearer {token}").into_bytes().into_boxed_slice())
            .collect()
    } else {
        authorization
    };
    let after_seq = cursor.as_deref().or(query.after_seq.as_deref());
    let subscription = Subscription::open(
        core,
        &authorization,
        topic,
        after_seq,
        query.limit.as_deref(),
    )
    .map_err(ApiError::from)
    .inspect_err(|error| observe_refusal(state, topic, error))?;
    state.metrics().khala_outcome(None);
    Ok(subscription)
}

/// `GET /internal/v1/khala/topics/{topic}/ws`: the stream as WebSocket
/// text frames, each a JSON object tagged by `type`.
pub(crate) async fn ws(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<StreamQuery>,
    Authorization(authorization): Authorization,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let subscription = open(&state, &topic, &query, authorization, None).await?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::custom(
            rejection.status(),
            "invalid_request",
            "this route needs a WebSocket upgrade request",
        )
        .with_reason("websocket_upgrade_required")
    })?;
    let hello = json!({
        "type": "hello",
        "topic": subscription.topic(),
        "after_seq": subscription.cursor(),
        "limit": subscription.limit().get(),
        "recommended_reconnect_backoff_ms": RECONNECT_BACKOFF_MS,
    });
    // Each frame is written at once (write buffer threshold 0): frames are
    // whole messages and each send flushes anyway.
    let upgrade = upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(WS_MAX_INCOMING)
        .max_frame_size(WS_MAX_INCOMING);
    Ok(upgrade.on_upgrade(move |socket| follow(socket, subscription, hello)))
}

/// Drives one WebSocket: `hello`, then a `message` frame per message, pings
/// while idle, and a last frame and close code when the stream ends.
async fn follow(mut socket: WebSocket, mut subscription: Subscription, hello: Value) {
    if send_json(&mut socket, &hello).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(WS_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            next = subscription.next() => match next {
                Ok(messages) => {
                    for message in messages {
                        let frame = json!({"type": "message", "message": message});
                        if send_json(&mut socket, &frame).await.is_err() {
                            return;
                        }
                    }
                }
                Err(ended) => {
                    let (frame, code) = final_frame(ended);
                    let reason = frame["type"].as_str().unwrap_or_default().to_owned();
                    if send_json(&mut socket, &frame).await.is_ok() {
                        let close = CloseFrame { code, reason: reason.into() };
                        let _ = socket.send(WsMessage::Close(Some(close))).await;
                    }
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                // Pongs and client frames carry nothing for the stream.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(WsMessage::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> Result<(), axum::Error> {
    socket.send(WsMessage::Text(value.to_string().into())).await
}

/// The last frame of a WebSocket stream, and its close code.
fn final_frame(ended: Ended) -> (Value, u16) {
    let (code, message, close) = match ended {
        Ended::Stale(stale) => {
            let mut frame = serde_json::to_value(&stale).unwrap_or_else(|_| json!({}));
            frame["type"] = json!("stale_cursor");
            return (frame, CLOSE_STALE_CURSOR);
        }
        Ended::SlowConsumer => (
            "slow_consumer",
            "the stream fell too far behind the topic; resume from the last sequence".to_owned(),
            CLOSE_SLOW_CONSUMER,
        ),
        Ended::Closing => (
            "shutting_down",
            "the service is shutting down; resume from the last sequence".to_owned(),
            CLOSE_SHUTTING_DOWN,
        ),
        Ended::Erased(error) => ("run_erased", error.to_string(), CLOSE_RUN_ERASED),
        Ended::Failed(error) => ("unavailable", error.to_string(), CLOSE_UNAVAILABLE),
    };
    (
        json!({"type": "error", "code": code, "message": message}),
        close,
    )
}

/// `OPTIONS` on a Khala topic route: a browser's preflight, answered 204;
/// the origin policy adds the CORS headers.
pub(crate) async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// `id:` the message's sequence, `data:` the message as the poll route
/// shows it.
fn message_event(message: &Message) -> Event {
    let data = serde_json::to_string(message).unwrap_or_default();
    Event::default().id(message.sequence.to_string()).data(data)
}

/// The event that ends a stream: the stale cursor's 410 details, or an
/// `error` event with its code.
fn final_event(ended: Ended) -> Event {
    let (code, message) = match ended {
        Ended::Stale(stale) => {
            let details = serde_json::to_string(&stale).unwrap_or_default();
            return Event::default().event("stale_cursor").data(details);
        }
        Ended::SlowConsumer => (
            "slow_consumer",
            "the stream fell too far behind the topic; resume from the last id".to_owned(),
        ),
        Ended::Closing => (
            "shutting_down",
            "the service is shutting down; resume from the last id".to_owned(),
        ),
        Ended::Erased(error) => ("run_erased", error.to_string()),
        Ended::Failed(error) => ("unavailable", error.to_string()),
    };
    let data = json!({"code": code, "message": message}).to_string();
    Event::default().event("error").data(data)
}

/// The checks in `docs/KHALA.md`'s order: token, topic, query (read here,
/// not by an extractor, so that a request without a token is told so
/// first), access; then the poll.
async fn poll(
    core: &crate::core::Core,
    topic: &str,
    uri: &Uri,
    authorization: &[Box<[u8]>],
) -> Result<crate::khala::PollResponse, ApiError> {
    let khala = &core.khala;
    let log = core.authority.log();
    let principal = khala.authenticate(authorization)?;
    let topic: Topic = topic.parse().map_err(KhalaError::from)?;
    let axum::extract::Query(query) = axum::extract::Query::<PollQuery>::try_from_uri(uri)
        .map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
    let params = PollParams::from_query(
        query.after_seq.as_deref(),
        query.limit.as_deref(),
        query.wait_ms.as_deref(),
    )
    .map_err(KhalaError::from)?;
    let access = khala.authorize(log, &principal, &topic)?;
    Ok(khala.poll(log, &principal, &topic, access, &params).await?)
}

/// `GET /internal/v1/khala/fanout/hooks`.
pub(crate) async fn hooks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let core = state.core()?;
    let driver = core.khala.driver();
    Ok(Json(
        json!({"driver": driver.name(), "hooks": driver.hooks()}),
    ))
}
