//! Accepting one Notification event: which sinks it reaches, its build's facts merged, and the
//! event with one delivery per matched sink stored in one transaction before the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use ulid::Ulid;

use super::facts::BuildFacts;
use super::model::Event;
use crate::sinks::sink::Sinks;
use crate::store::{EventAccepted, EventSink, NewEvent, Store, StoreError};

/// What became of one sink for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFate {
    Queued,
    /// It did not match, or the build already has its one record there.
    Skipped,
}

impl SinkFate {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkFate::Queued => "queued",
            SinkFate::Skipped => "skipped",
        }
    }
}

/// The endpoint's answer, before it is written as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The stored event's id (for a duplicate, the first one's).
    pub event: String,
    pub duplicate: bool,
    /// Every sink by name (none for a duplicate, which queues nothing).
    pub sinks: BTreeMap<String, SinkFate>,
}

/// Stores `event` (`body` is its bytes as received) from the Jenkins target `jenkins`, with a
/// delivery for every sink it matches. A repeat of (target, build, phase) received within
/// `retention_ms` is a duplicate and stores nothing.
pub async fn accept(
    store: &Store,
    sinks: &Sinks,
    jenkins: &str,
    event: Event,
    body: Vec<u8>,
    request_id: Option<&str>,
    retention_ms: i64,
) -> Result<Accepted, StoreError> {
    let matched: Vec<EventSink> = sinks
        .iter()
        .filter(|sink| sink.matcher.check(jenkins, &event).is_ok())
        .map(|sink| EventSink {
            delivery_id: Ulid::generate().to_string(),
            sink: sink.name.clone(),
            once_per_build: sink.once_per_build(),
            ordering_key: sink.ordering_key(jenkins, &event),
        })
        .collect();
    let id = Ulid::generate().to_string();
    let new = NewEvent {
        id: id.clone(),
        jenkins: jenkins.to_owned(),
        build: event.build_key(),
        phase: event.build.phase.as_str().to_owned(),
        request_id: request_id.map(str::to_owned),
        body,
        sinks: matched,
    };
    let merged = event.clone();
    let merge = Arc::new(move |known: Option<&str>| {
        let mut facts: BuildFacts = known
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        facts.absorb(&merged);
        serde_json::to_string(&facts).unwrap_or_else(|_| "{}".to_owned())
    });
    let since = crate::store::now_ms().saturating_sub(retention_ms);
    match store.accept_event(new, merge, since).await? {
        EventAccepted::Duplicate { first } => Ok(Accepted {
            event: first,
            duplicate: true,
            sinks: BTreeMap::new(),
        }),
        EventAccepted::Stored { queued } => {
            let mut fates: BTreeMap<String, SinkFate> = sinks
                .iter()
                .map(|sink| (sink.name.clone(), SinkFate::Skipped))
                .collect();
            for (sink, was_queued) in queued {
                if was_queued {
                    fates.insert(sink, SinkFate::Queued);
                }
            }
            Ok(Accepted {
                event: id,
                duplicate: false,
                sinks: fates,
            })
        }
    }
}
