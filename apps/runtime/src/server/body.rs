//! Request bodies under two bounds: time and memory.
//!
//! - **Time.** A body must keep arriving: a pause longer than
//!   `RUNTIME_BODY_READ_TIMEOUT_MS` between two parts, or an average rate
//!   below `RUNTIME_BODY_MIN_BYTES_PER_SEC` once that first pause has passed,
//!   ends the request with 408 and the connection with it. A client sending
//!   one byte every few seconds cannot hold a connection for long.
//! - **Memory.** Every request with a body reserves its bytes from one
//!   budget of `RUNTIME_MAX_BODY_BYTES_IN_FLIGHT` before it is read (its
//!   `Content-Length`, or each chunk as it arrives) and keeps them until its
//!   response is ready; past the budget a request answers 503
//!   `body_budget_exhausted` at once instead of being buffered.

use crate::error::ApiError;
use crate::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Why a body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BodyRefusal {
    /// It stopped arriving, or arrived too slowly.
    #[error("the request body did not arrive in time")]
    Timeout,
    /// Its chunks would exceed the budget of bodies in flight.
    #[error("the budget of request bodies in flight is exhausted")]
    Budget,
}

/// Bytes one request holds from the budget, and why its body was cut off,
/// shared between the middleware and the body it wraps.
#[derive(Default)]
struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    refusal: Option<BodyRefusal>,
}

type Shared = Arc<Mutex<Reservation>>;

/// Reserves `bytes` more from `budget` for `reservation`; false when the
/// budget does not have them.
fn reserve(budget: &Arc<Semaphore>, reservation: &Shared, bytes: usize) -> bool {
    if bytes == 0 {
        return true;
    }
    let Ok(bytes) = u32::try_from(bytes) else {
        return false;
    };
    let Ok(permit) = Arc::clone(budget).try_acquire_many_owned(bytes) else {
        return false;
    };
    let mut reservation = reservation.lock().expect("reservation lock");
    match &mut reservation.permit {
        Some(held) => held.merge(permit),
        None => reservation.permit = Some(permit),
    }
    true
}

/// The middleware: reserves the body's bytes, wraps the body in the time
/// bounds, and turns a body cut off on either bound into its envelope.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let declared = declared_length(request.headers());
    if declared == Some(0) || (declared.is_none() && !is_chunked(request.headers())) {
        return next.run(request).await;
    }
    let config = state.config();
    let budget = state.body_budget();
    let reservation = Shared::default();
    // A declared length is reserved whole (up to one byte past the limit,
    // which is enough to refuse it), before any of it is read.
    let reserve_per_chunk = match declared {
        Some(length) => {
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if !reserve(budget, &reservation, length.min(config.max_body_bytes + 1)) {
                return ApiError::body_budget_exhausted().into_response();
            }
            false
        }
        None => true,
    };
    let (parts, body) = request.into_parts();
    let now = Instant::now();
    let guarded = GuardedBody {
        inner: body,
        started: now,
        received: 0,
        gap: config.body_read_timeout,
        min_rate: config.body_min_bytes_per_sec,
        sleep: Box::pin(tokio::time::sleep_until(now + config.body_read_timeout)),
        budget: reserve_per_chunk.then(|| Arc::clone(budget)),
        reservation: Arc::clone(&reservation),
    };
    let response = next
        .run(Request::from_parts(parts, Body::new(guarded)))
        .await;
    // The reservation is held until here: the handler's copy of the body
    // lives as long as the handler.
    let refusal = reservation.lock().expect("reservation lock").refusal;
    match refusal {
        Some(BodyRefusal::Timeout) => ApiError::body_timeout().into_response(),
        Some(BodyRefusal::Budget) => ApiError::body_budget_exhausted().into_response(),
        None => response,
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
}

/// A request body that fails once it stops arriving, or arrives too slowly,
/// and (for a body of unknown length) reserves each chunk as it arrives.
struct GuardedBody {
    inner: Body,
    started: Instant,
    received: u64,
    gap: Duration,
    min_rate: u64,
    /// Fires at the deadline of the next part.
    sleep: Pin<Box<Sleep>>,
    /// The budget, when chunks are reserved as they arrive.
    budget: Option<Arc<Semaphore>>,
    reservation: Shared,
}

impl GuardedBody {
    /// The next part must come within `gap` of the last one, and by the
    /// time the average rate since `gap` after the start would fall below
    /// `min_rate`.
    fn deadline(&self) -> Instant {
        let by_gap = Instant::now() + self.gap;
        let by_rate = self.started
            + self.gap
            + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        by_gap.min(by_rate)
    }

    fn refuse(
        &mut self,
        refusal: BodyRefusal,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.reservation.lock().expect("reservation lock").refusal = Some(refusal);
        Poll::Ready(Some(Err(Box::new(refusal))))
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(budget) = &this.budget
                        && !reserve(budget, &this.reservation, data.len())
                    {
                        return this.refuse(BodyRefusal::Budget);
                    }
                    this.received += data.len() as u64;
                }
                let deadline = this.deadline();
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => this.refuse(BodyRefusal::Timeout),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
