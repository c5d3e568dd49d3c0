//! Server-Sent Events ("Pattern: Server-Sent Events (SSE) for Server Push"): frames
//! in the WHATWG `text/event-stream` format, and a subscription turned into a stream
//! of them with resume, gaps, heartbeats and an explicit end.
//!
//! A stream opens with `event: resume` whose data says whether the resume was
//! complete (`{"recovered":true}`: every message after the client's `Last-Event-ID`
//! follows, none twice) or not (`{"recovered":false}`: reload, then follow). Each
//! message is one frame whose `id` is its [`Position`](crate::Position), so the
//! browser's automatic reconnect resumes where it stopped. A buffer overflow is an
//! `event: gap` with the number missed (`null` for a loss upstream of the hub, whose
//! size is unknown: [`Hub::report_gap`](crate::Hub::report_gap)); a comment line every heartbeat keeps proxies
//! from closing an idle stream; the end is `event: closed` with the reason.
//!
//! The transport (headers such as `Cache-Control: no-store` and
//! `X-Accel-Buffering: no`, the HTTP response) belongs to the server; this module
//! only makes the bytes.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;

use crate::hub::{Closed, Event, MISSED_UNKNOWN, Message, Resume, Subscription};

/// Appends one event: optional `id`, optional `event` name, `data` split into lines
/// (any of `\r\n`, `\n`, `\r` breaks a line). Newlines and NUL in `id` or `event`
/// would end the field early, so such ids and names are left out.
pub fn write_event(out: &mut BytesMut, id: Option<&str>, event: Option<&str>, data: &str) {
    let clean = |s: &str| !s.contains(['\n', '\r', '\0']);
    if let Some(event) = event.filter(|e| clean(e) && !e.is_empty()) {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(id) = id.filter(|i| clean(i)) {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
    out.put_u8(b'\n');
}

/// Appends a `retry:` field in its own block.
pub fn write_retry(out: &mut BytesMut, retry: Duration) {
    out.put_slice(format!("retry: {}\n\n", retry.as_millis()).as_bytes());
}

/// Appends a comment line (ignored by clients; keeps the connection warm).
pub fn write_comment(out: &mut BytesMut, text: &str) {
    out.put_slice(b": ");
    out.put_slice(text.replace(['\n', '\r'], " ").as_bytes());
    out.put_slice(b"\n\n");
}

/// How a stream is written.
#[derive(Debug, Clone)]
pub struct SseConfig {
    /// The event name of messages (`message`, the browser's default, when `None`).
    pub event: Option<String>,
    /// A comment is sent after this long without a frame.
    pub heartbeat: Duration,
    /// The reconnect delay suggested to the client.
    pub retry: Option<Duration>,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            event: None,
            heartbeat: Duration::from_secs(15),
            retry: Some(Duration::from_secs(2)),
        }
    }
}

fn message_frame(out: &mut BytesMut, message: &Message, event: Option<&str>) {
    let id = message.position.encode();
    match std::str::from_utf8(&message.payload) {
        Ok(text) => write_event(out, Some(&id), event, text),
        // SSE carries text: a payload that is not UTF-8 is announced, not mangled.
        Err(_) => write_event(out, Some(&id), Some("undecodable"), "{}"),
    }
}

enum Phase {
    Start(Resume),
    Live,
    Done,
}

struct State {
    sub: Subscription,
    phase: Phase,
    config: SseConfig,
}

/// The frames of `sub` after `resume` (see the [module docs](self)).
pub fn stream(
    sub: Subscription,
    resume: Resume,
    config: SseConfig,
) -> impl Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(
        State { sub, phase: Phase::Start(resume), config },
        |mut s| async move {
            let mut out = BytesMut::new();
            match std::mem::replace(&mut s.phase, Phase::Live) {
                Phase::Done => return None,
                Phase::Start(resume) => {
                    if let Some(retry) = s.config.retry {
                        write_retry(&mut out, retry);
                    }
                    match resume {
                        Resume::Complete(replay) => {
                            write_event(&mut out, None, Some("resume"), r#"{"recovered":true}"#);
                            for m in &replay {
                                message_frame(&mut out, m, s.config.event.as_deref());
                            }
                        }
                        Resume::Reset { .. } => {
                            write_event(&mut out, None, Some("resume"), r#"{"recovered":false}"#);
                        }
                    }
                    return Some((out.freeze(), s));
                }
                Phase::Live => {}
            }
            let event = tokio::time::timeout(s.config.heartbeat, s.sub.recv()).await;
            match event {
                Err(_) => write_comment(&mut out, "heartbeat"),
                Ok(Ok(Event::Message(m))) => {
                    message_frame(&mut out, &m, s.config.event.as_deref());
                    // Whatever else is buffered goes in the same chunk.
                    while let Ok(Some(Event::Message(m))) = s.sub.try_recv() {
                        message_frame(&mut out, &m, s.config.event.as_deref());
                        if out.len() > 64 << 10 {
                            break;
                        }
                    }
                }
                Ok(Ok(Event::Gap { missed: MISSED_UNKNOWN })) => {
                    write_event(&mut out, None, Some("gap"), r#"{"missed":null}"#);
                }
                Ok(Ok(Event::Gap { missed })) => {
                    write_event(&mut out, None, Some("gap"), &format!(r#"{{"missed":{missed}}}"#));
                }
                Ok(Err(why)) => {
                    let reason = match why {
                        Closed::Hub => "shutdown",
                        Closed::SlowConsumer => "slow-consumer",
                    };
                    write_event(
                        &mut out,
                        None,
                        Some("closed"),
                        &format!(r#"{{"reason":"{reason}"}}"#),
                    );
                    s.phase = Phase::Done;
                }
            }
            Some((out.freeze(), s))
        },
    )
}
