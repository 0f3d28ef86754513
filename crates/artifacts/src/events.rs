//! The event stream as both builders read it: in strictly increasing seq
//! order, one event at a time, with the event types the artifacts single out.

use crate::error::BuildError;
use openagents_run_state::RunEvent;

/// Event type whose payload becomes a receipt `tool_calls` entry and is
/// counted in the replay's `total_tool_calls`.
pub(crate) const TOOL_CALL_COMPLETED: &str = "tool.call.completed";

/// Event type whose payload becomes a receipt `verification` entry.
pub(crate) const VERIFICATION_COMPLETED: &str = "verification.completed";

/// Wraps a caller's event source, turning its errors into [`BuildError`]s and
/// refusing an event whose seq does not exceed the previous one.
pub(crate) struct OrderedEvents<I> {
    /// The caller's event source.
    inner: I,
    /// Seq of the last event handed out, to check the next one against.
    last_seq: Option<u64>,
}

/// Starts reading `events` from the beginning, in checked seq order.
pub(crate) fn ordered<I, E>(events: I) -> OrderedEvents<I::IntoIter>
where
    I: IntoIterator<Item = Result<RunEvent, E>>,
{
    OrderedEvents {
        inner: events.into_iter(),
        last_seq: None,
    }
}

impl<I, E> Iterator for OrderedEvents<I>
where
    I: Iterator<Item = Result<RunEvent, E>>,
{
    type Item = Result<RunEvent, BuildError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        let event = match self.inner.next()? {
            Ok(event) => event,
            Err(source) => return Some(Err(BuildError::Events(source))),
        };
        if let Some(previous) = self.last_seq
            && event.seq <= previous
        {
            return Some(Err(BuildError::SeqNotIncreasing {
                previous,
                seq: event.seq,
            }));
        }
        self.last_seq = Some(event.seq);
        Some(Ok(event))
    }
}
