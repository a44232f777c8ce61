//! Dispatch: turning a verified, extracted call into a delivery and handing it to Jenkins.
//!
//! [`Dispatcher`] is the one seam between the request path and Jenkins. In queue mode (the
//! default) a delivery is stored durably and answered at once; the [`worker`] delivers it with
//! retries. In direct mode Jenkins is called inside the request and its answer returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use ulid::Ulid;

use crate::extract::Variables;
use crate::rules::Rule;
use crate::rules::model::BodyMode;
pub use crate::sinks::jenkins::{DispatchError, JenkinsAnswer, JenkinsClient, JenkinsTarget};
use crate::sinks::port::runs::{self, Unrecorded};
use crate::store::{
    Accepted, Effect, IdempotencyKey, NewDelivery, Next, ReplayMark, Store, target_id,
};
use crate::verify::Verified;

/// The media type of what Jenkins receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Json,
    /// A form post forwarded as a form (GWT then builds its JSON from the fields itself).
    Form,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Form => "application/x-www-form-urlencoded",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == ContentType::Form.as_str() {
            ContentType::Form
        } else {
            ContentType::Json
        }
    }
}

/// What one attempt sends to Jenkins: built from a [`Delivery`] when a call is accepted, or
/// read back from the store by the worker for a delivery accepted earlier.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: Ulid,
    pub rule: Arc<Rule>,
    /// What Jenkins receives, chosen by the rule's `dispatch.body`.
    pub body: Bytes,
    pub content_type: ContentType,
}

/// One verified call to deliver to Jenkins. Only [`Delivery::prepare`] makes one, and it takes
/// a [`Verified`], so nothing that did not pass a rule's checks can be stored or dispatched.
/// Its fields are private, so this does not compile:
///
/// ```compile_fail
/// # use hookgate::dispatch::{Call, Delivery};
/// fn forge(call: Call) -> Delivery {
///     Delivery { call, idempotency: None, request_id: None, replay: None }
/// }
/// ```
#[derive(Debug)]
pub struct Delivery {
    call: Call,
    /// Digest of the rule's idempotency key for this call, when it has one.
    idempotency: Option<IdempotencyKey>,
    request_id: Option<String>,
    /// The verified signature, remembered with the delivery against replays.
    replay: Option<ReplayMark>,
    /// The Port run the call stands for (`{"sink", "run"}`), when its rule reports and the
    /// run id resolved.
    report: Option<String>,
}

impl Delivery {
    /// `idempotency_key` is the raw key the rule's `[idempotency]` found in the call; only its
    /// digest is kept. `replay` is the claimed signature, when the rule remembers them.
    pub fn prepare(
        verified: &Verified<'_>,
        variables: &Variables,
        idempotency_key: Option<&str>,
        request_id: Option<&str>,
        replay: Option<ReplayMark>,
    ) -> Self {
        let rule = verified.rule();
        let inbound = verified.inbound();
        let (body, content_type) = match rule.dispatch.body {
            // The sender's token may be a form field; it is never forwarded, so a form body is
            // re-encoded without it.
            BodyMode::Original if inbound.form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (name, value) in form_urlencoded::parse(&inbound.body) {
                    if name != "token" {
                        form.append_pair(&name, &value);
                    }
                }
                (Bytes::from(form.finish()), ContentType::Form)
            }
            BodyMode::Original => (inbound.body.clone(), ContentType::Json),
            // A map of strings always serialises.
            BodyMode::Variables => (
                Bytes::from(serde_json::to_vec(variables).unwrap_or_else(|_| b"{}".to_vec())),
                ContentType::Json,
            ),
        };
        let idempotency = rule
            .idempotency
            .as_ref()
            .zip(idempotency_key)
            .map(|(spec, key)| IdempotencyKey {
                digest: hex::encode(Sha256::digest(key.as_bytes())),
                ttl_ms: i64::try_from(spec.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            });
        let report = rule.report.as_ref().and_then(|report| {
            match report.run_id.render(variables) {
                Some(run) if crate::sinks::port::is_run_id(&run) => {
                    Some(crate::store::report_text(&report.sink, &run))
                }
                Some(_) => {
                    tracing::warn!(rule = %rule.name, run_id = report.run_id.source(), "The call's run_id is not a Port run id (letters, digits, `_` and `-`); it is not reported.");
                    None
                }
                None => {
                    tracing::warn!(rule = %rule.name, run_id = report.run_id.source(), "The call names no Port run (its run_id template is unresolved); it is not reported.");
                    None
                }
            }
        });
        Self {
            call: Call {
                id: Ulid::generate(),
                rule: Arc::clone(rule),
                body,
                content_type,
            },
            idempotency,
            request_id: request_id.map(str::to_owned),
            replay,
            report,
        }
    }

    pub fn id(&self) -> Ulid {
        self.call.id
    }

    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The Port run the call stands for (`{"sink", "run"}`), when its rule reports.
    pub fn report(&self) -> Option<&str> {
        self.report.as_deref()
    }

    fn to_stored(&self) -> NewDelivery {
        NewDelivery {
            id: self.call.id.to_string(),
            target: target_id("jenkins", &self.call.rule.dispatch.jenkins),
            rule: Some(self.call.rule.name.clone()),
            ordering_key: None,
            body: self.call.body.to_vec(),
            content_type: self.call.content_type.as_str().to_owned(),
            request_id: self.request_id.clone(),
            idempotency: self.idempotency.clone(),
            replay: self.replay,
            report: self.report.clone(),
        }
    }
}

/// What happened to a delivery handed to the dispatcher.
#[derive(Debug)]
pub enum Dispatched {
    /// Direct mode: Jenkins accepted it.
    Delivered(JenkinsAnswer),
    /// Queue mode: stored durably; the worker delivers it.
    Queued,
    /// Queue mode: a repeat of a stored call (the same signature inside its replay window, or
    /// the same idempotency key inside its TTL).
    Duplicate { first: String },
}

/// What tells Port's runs about calls decided outside the outbox: a direct-mode dispatch, and a
/// call every rule filtered. Present when a store is open and a port sink is configured.
#[derive(Clone)]
pub struct Reporter {
    pub store: Store,
    pub wake: Arc<Notify>,
    pub unrecorded: Arc<Unrecorded>,
    /// How long a trigger's queue items name its run (`delivery.done_retention_secs`).
    pub ttl: Duration,
    /// Each Jenkins target's `public_url` (else `url`), by name.
    pub public_urls: Arc<HashMap<String, String>>,
}

impl Reporter {
    /// Writes `effects` and wakes the worker to send what they queued. A store that refuses them
    /// is logged: the call itself was decided already. A `new_call`'s (a filtered call's) are
    /// held to `max_store_bytes`; a direct dispatch's outcome may use the headroom above it.
    pub async fn record(
        &self,
        effects: Vec<Effect>,
        new_call: bool,
    ) -> Result<(), crate::store::StoreError> {
        if effects.is_empty() {
            return Ok(());
        }
        let result = self.store.apply(effects, new_call).await;
        match &result {
            Ok(()) => self.wake.notify_one(),
            Err(error) => {
                tracing::error!(%error, cause = %crate::error::cause_chain(error), "Cannot record what a reported call tells its Port run; the run is not updated.")
            }
        }
        result
    }

    /// A direct-mode call to Jenkins for a reported `delivery`: counted as unrecorded while it
    /// runs (a build event of it may come first), then its outcome told to the run, as the
    /// worker's would be.
    async fn invoke(
        &self,
        jenkins: &JenkinsClient,
        delivery: &Delivery,
        report: &str,
    ) -> Result<JenkinsAnswer, DispatchError> {
        let name = delivery.call.rule.dispatch.jenkins.as_str();
        let _unrecorded = self.unrecorded.begin(name, report);
        let result = jenkins.invoke(delivery.call()).await;
        let next = match &result {
            Ok(answer) => Next::Done {
                receipt: crate::sinks::jenkins::receipt(answer),
            },
            Err(error) => Next::Dead {
                reason: crate::sinks::jenkins::failure_text(error),
            },
        };
        let public_url = self.public_urls.get(name).map_or("", String::as_str);
        let effects = match &result {
            // Jenkins may have acted on a call it did not answer as GWT does.
            Err(error @ (DispatchError::Timeout(_) | DispatchError::UnexpectedAnswer { .. })) => {
                runs::trigger_unanswered(report, &crate::sinks::jenkins::failure_text(error))
            }
            _ => runs::trigger_outcome(
                &target_id("jenkins", name),
                Some(report),
                &next,
                self.ttl,
                public_url,
            ),
        };
        // Logged by `record`: Jenkins' answer stands whatever the store says.
        let _ = self.record(effects, false).await;
        result
    }
}

/// Where deliveries go.
pub enum Dispatcher {
    Direct {
        jenkins: Arc<JenkinsClient>,
        reporter: Option<Reporter>,
    },
    Queue {
        store: Store,
        wake: Arc<Notify>,
    },
}

impl Dispatcher {
    /// Hands one call's deliveries over. In queue mode they are stored in one transaction, so
    /// either all of them are accepted or (a store error for each) none; in direct mode each is
    /// its own call to Jenkins, made concurrently.
    pub async fn dispatch_all(
        &self,
        deliveries: &[Delivery],
    ) -> Vec<Result<Dispatched, DispatchError>> {
        match self {
            Dispatcher::Direct { jenkins, reporter } => {
                futures_util::future::join_all(deliveries.iter().map(|delivery| async {
                    let result = match (reporter, delivery.report()) {
                        (Some(reporter), Some(report)) => {
                            reporter.invoke(jenkins, delivery, report).await
                        }
                        _ => jenkins.invoke(delivery.call()).await,
                    };
                    result.map(Dispatched::Delivered)
                }))
                .await
            }
            Dispatcher::Queue { store, wake } => {
                let stored = deliveries.iter().map(Delivery::to_stored).collect();
                match store.accept_all(stored).await {
                    Ok(accepted) => {
                        if accepted.contains(&Accepted::Stored) {
                            wake.notify_one();
                        }
                        accepted
                            .into_iter()
                            .map(|accepted| {
                                Ok(match accepted {
                                    Accepted::Stored => Dispatched::Queued,
                                    Accepted::Duplicate { first } => {
                                        Dispatched::Duplicate { first }
                                    }
                                })
                            })
                            .collect()
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        deliveries
                            .iter()
                            .map(|_| Err(DispatchError::Store(Arc::clone(&error))))
                            .collect()
                    }
                }
            }
        }
    }

    pub fn store(&self) -> Option<&Store> {
        match self {
            Dispatcher::Direct { .. } => None,
            Dispatcher::Queue { store, .. } => Some(store),
        }
    }
}
