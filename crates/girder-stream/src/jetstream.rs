//! NATS JetStream as a partitioned source (feature `nats`), for when producers and
//! the pipeline run on several machines.
//!
//! Layout for a log named `clicks` with N partitions: one stream
//! `girder_stream_clicks`, subjects `girder.stream.clicks.<p>` for `p` in `0..N`,
//! file storage, records kept for `max_age`. The partition count is written into the
//! stream's description and checked on every open. A record's offset is its stream
//! sequence: offsets grow within a partition but skip the other partitions'.
//!
//! A reader per partition is an ephemeral pull consumer filtered to its subject,
//! starting at the sequence asked for, without acknowledgements (the pipeline's
//! checkpoint is the position that counts); it is kept while reads continue where
//! the last one ended and replaced when a read asks for another offset.

use std::time::Duration;

use async_nats::jetstream::{self as js, consumer, stream};
use futures_util::StreamExt;

use crate::source::{Source, SourceError, SourceRecord, partition_of};

/// How a JetStream log is laid out.
#[derive(Debug, Clone)]
pub struct JetStreamLogConfig {
    /// The log's name: letters, digits and `-`.
    pub name: String,
    /// Partitions; fixed when the stream is created.
    pub partitions: u32,
    /// How long records are kept.
    pub max_age: Duration,
    /// The largest record accepted.
    pub record_bytes_max: usize,
    /// How long a request to the server may take.
    pub request_timeout: Duration,
}

impl JetStreamLogConfig {
    /// `partitions` partitions of `name`, records kept 7 days, up to 1 MiB each.
    #[must_use]
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            max_age: Duration::from_secs(7 * 24 * 3_600),
            record_bytes_max: 1 << 20,
            request_timeout: Duration::from_secs(5),
        }
    }
}

struct Reader {
    consumer: consumer::PullConsumer,
    next: u64,
}

/// A partitioned log on NATS JetStream. See the [module docs](self).
pub struct JetStreamLog {
    js: js::Context,
    stream: stream::Stream,
    config: JetStreamLogConfig,
    readers: Vec<tokio::sync::Mutex<Option<Reader>>>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog").field("config", &self.config).finish_non_exhaustive()
    }
}

fn nats<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> SourceError {
    SourceError::engine(context)
}

async fn bounded<T>(
    context: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(after, fut).await.map_err(|_| {
        SourceError::Config(format!("{context}: no answer from NATS within {after:?}"))
    })?
}

impl JetStreamLog {
    /// Connects to `url` and opens (creating it the first time) the log's stream.
    ///
    /// # Errors
    /// [`SourceError::Config`] for a bad name, partition count or a stream created
    /// with another partition count; [`SourceError::Engine`] when NATS fails.
    pub async fn connect(url: &str, config: JetStreamLogConfig) -> Result<Self, SourceError> {
        check(&config)?;
        let client = bounded("connect", config.request_timeout, async {
            async_nats::connect(url).await.map_err(nats("connecting to NATS"))
        })
        .await?;
        Self::open(client, config).await
    }

    /// Opens the log on an existing connection.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn open(
        client: async_nats::Client,
        config: JetStreamLogConfig,
    ) -> Result<Self, SourceError> {
        check(&config)?;
        let js = js::new(client);
        let description =
            format!("girder-stream partitioned log; partitions {}", config.partitions);
        let wanted = stream::Config {
            name: format!("girder_stream_{}", config.name),
            subjects: vec![format!("girder.stream.{}.*", config.name)],
            description: Some(description.clone()),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: config.max_age,
            max_message_size: i32::try_from(config.record_bytes_max).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let stream = bounded("create stream", config.request_timeout, async {
            js.get_or_create_stream(wanted).await.map_err(nats("creating the stream"))
        })
        .await?;
        let have = stream.cached_info().config.description.clone().unwrap_or_default();
        if have != description {
            return Err(SourceError::Config(format!(
                "stream girder_stream_{} exists as {have:?}; opened with {} partitions",
                config.name, config.partitions
            )));
        }
        let readers = (0..config.partitions).map(|_| tokio::sync::Mutex::new(None)).collect();
        Ok(Self { js, stream, config, readers })
    }

    fn subject(&self, partition: u32) -> String {
        format!("girder.stream.{}.{partition}", self.config.name)
    }

    fn check_partition(&self, partition: u32) -> Result<(), SourceError> {
        if partition < self.config.partitions {
            Ok(())
        } else {
            Err(SourceError::NoPartition { partition, count: self.config.partitions })
        }
    }

    /// The partition `key` goes to.
    #[must_use]
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.config.partitions)
    }

    /// Appends `payload` to `key`'s partition; returns once the server has stored it,
    /// with its partition and offset.
    ///
    /// # Errors
    /// [`SourceError::TooLarge`], or NATS failed or did not answer in time.
    pub async fn append(&self, key: &[u8], payload: Vec<u8>) -> Result<(u32, u64), SourceError> {
        let partition = self.partition_of(key);
        Ok((partition, self.append_to(partition, payload).await?))
    }

    /// Appends `payload` to `partition`.
    ///
    /// # Errors
    /// As [`append`](Self::append), or [`SourceError::NoPartition`].
    pub async fn append_to(&self, partition: u32, payload: Vec<u8>) -> Result<u64, SourceError> {
        self.check_partition(partition)?;
        if payload.len() > self.config.record_bytes_max {
            return Err(SourceError::TooLarge {
                len: payload.len(),
                max: self.config.record_bytes_max,
            });
        }
        let subject = self.subject(partition);
        bounded("publish", self.config.request_timeout, async {
            let ack = self
                .js
                .publish(subject, bytes::Bytes::from(payload))
                .await
                .map_err(nats("publishing"))?;
            let ack = ack.await.map_err(nats("storing"))?;
            Ok(ack.sequence)
        })
        .await
    }

    /// Deletes the stream (tests and teardown).
    ///
    /// # Errors
    /// NATS failed.
    pub async fn delete(self) -> Result<(), SourceError> {
        let name = format!("girder_stream_{}", self.config.name);
        self.js.delete_stream(name).await.map(drop).map_err(nats("deleting the stream"))
    }
}

fn check(config: &JetStreamLogConfig) -> Result<(), SourceError> {
    let name_ok = !config.name.is_empty()
        && config.name.len() <= 64
        && config.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !name_ok {
        return Err(SourceError::Config(format!(
            "name {:?}: 1–64 letters, digits and '-'",
            config.name
        )));
    }
    if !(1..=crate::log::PARTITIONS_MAX).contains(&config.partitions) {
        return Err(SourceError::Config(format!(
            "partitions: {} is not in 1..={}",
            config.partitions,
            crate::log::PARTITIONS_MAX
        )));
    }
    if config.record_bytes_max == 0 || config.max_age.is_zero() || config.request_timeout.is_zero()
    {
        return Err(SourceError::Config(
            "record_bytes_max, max_age and request_timeout must be positive".into(),
        ));
    }
    Ok(())
}

impl Source for std::sync::Arc<JetStreamLog> {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    async fn first_offset(&self, partition: u32) -> Result<u64, SourceError> {
        self.check_partition(partition)?;
        let mut stream = self.stream.clone();
        let info = bounded("stream info", self.config.request_timeout, async {
            stream.info().await.map(|i| i.state.first_sequence).map_err(nats("stream info"))
        })
        .await?;
        Ok(info.max(1))
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        self.check_partition(partition)?;
        let mut slot = self.readers[partition as usize].lock().await;
        if slot.as_ref().is_none_or(|r| r.next != from) {
            let config = consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ack_policy: consumer::AckPolicy::None,
                filter_subject: self.subject(partition),
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            };
            let consumer = bounded("create reader", self.config.request_timeout, async {
                self.stream.create_consumer(config).await.map_err(nats("creating a reader"))
            })
            .await?;
            *slot = Some(Reader { consumer, next: from });
        }
        let Some(reader) = slot.as_mut() else { return Ok(Vec::new()) };
        let wait = wait.max(Duration::from_millis(10));
        let result = bounded("read", wait + self.config.request_timeout, async {
            let mut batch = reader
                .consumer
                .batch()
                .max_messages(max.max(1))
                .expires(wait)
                .messages()
                .await
                .map_err(nats("reading"))?;
            let mut out = Vec::new();
            while let Some(message) = batch.next().await {
                let message =
                    message.map_err(|source| SourceError::Engine { context: "reading", source })?;
                let seq = message
                    .info()
                    .map_err(|e| SourceError::Config(format!("a message without metadata: {e}")))?
                    .stream_sequence;
                out.push(SourceRecord { offset: seq, payload: message.payload.to_vec() });
            }
            Ok(out)
        })
        .await;
        match result {
            Ok(records) => {
                if let Some(last) = records.last() {
                    reader.next = last.offset + 1;
                }
                Ok(records)
            }
            Err(e) => {
                // The reader's position is unknown now: the next read starts afresh.
                *slot = None;
                Err(e)
            }
        }
    }
}
