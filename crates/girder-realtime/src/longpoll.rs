//! Long polling ("Pattern: Long Polling for Near Real-time"): a request carrying the
//! position it has seen is answered at once when newer messages exist, or held until
//! one is published or the timeout passes — woken by the publish itself, with no
//! polling loop inside the server.

use std::time::Duration;

use crate::hub::{Event, Hub, HubError, Message, Position, Resume, SlowConsumer, SubscribeConfig};
use crate::topic::Topic;

/// A long poll's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Messages after the position, oldest first: at most `max`; empty when the
    /// timeout passed first. Ask again after the last one's position.
    Messages(Vec<Message>),
    /// The history does not reach back to the position: reload, then poll from
    /// [`Hub::last_position`].
    Reset {
        /// The oldest position still kept.
        oldest: Option<Position>,
    },
}

/// Messages on `topic` after `since` (`None`: only those published from now on), at
/// most `max` (1–10,000), waiting up to `timeout` for the first.
///
/// # Errors
/// [`HubError::Config`] for `max` out of range.
pub async fn poll(
    hub: &Hub,
    topic: &Topic,
    since: Option<Position>,
    max: usize,
    timeout: Duration,
) -> Result<Poll, HubError> {
    if !(1..=10_000).contains(&max) {
        return Err(HubError::Config("max must be 1 to 10,000"));
    }
    let config = SubscribeConfig { capacity: max, policy: SlowConsumer::DropOldest };
    let (mut sub, resume) = hub.resume(topic, since, config)?;
    match resume {
        Resume::Reset { oldest } => return Ok(Poll::Reset { oldest }),
        Resume::Complete(mut replay) if !replay.is_empty() => {
            replay.truncate(max);
            return Ok(Poll::Messages(replay));
        }
        Resume::Complete(_) => {}
    }
    let first = match tokio::time::timeout(timeout, sub.recv()).await {
        Err(_) | Ok(Err(_)) => return Ok(Poll::Messages(Vec::new())),
        Ok(Ok(Event::Gap { .. })) => return Ok(Poll::Reset { oldest: None }),
        Ok(Ok(Event::Message(m))) => m,
    };
    let mut out = vec![first];
    while out.len() < max {
        match sub.try_recv() {
            Ok(Some(Event::Message(m))) => out.push(m),
            _ => break,
        }
    }
    Ok(Poll::Messages(out))
}
