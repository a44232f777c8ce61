//! Dispatch: turning a verified, extracted call into a delivery and handing it to Jenkins.
//!
//! [`Dispatcher`] is the one seam between the request path and Jenkins. In queue mode (the
//! default) a delivery is stored durably and answered at once; the [`worker`] delivers it with
//! retries. In direct mode Jenkins is called inside the request and its answer returned.

pub mod jenkins;
pub mod worker;

use std::sync::Arc;

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use ulid::Ulid;

use crate::extract::Variables;
use crate::rules::Rule;
use crate::rules::model::BodyMode;
use crate::store::{Accepted, IdempotencyKey, NewDelivery, Store};
use crate::verify::Verified;
pub use jenkins::{DispatchError, JenkinsAnswer, JenkinsClient};

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

/// One call to deliver to Jenkins. Built only from a [`Verified`] request.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Ulid,
    pub rule: Arc<Rule>,
    /// What Jenkins receives, chosen by the rule's `dispatch.body`.
    pub body: Bytes,
    pub content_type: ContentType,
    /// Digest of the rule's idempotency key for this call, when it has one.
    pub idempotency: Option<IdempotencyKey>,
    pub request_id: Option<String>,
}

impl Delivery {
    /// `idempotency_key` is the raw key the rule's `[idempotency]` found in the call; only its
    /// digest is kept.
    pub fn prepare(
        verified: &Verified<'_>,
        variables: &Variables,
        idempotency_key: Option<&str>,
        request_id: Option<&str>,
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
        Self {
            id: Ulid::generate(),
            rule: Arc::clone(rule),
            body,
            content_type,
            idempotency,
            request_id: request_id.map(str::to_owned),
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
    /// Queue mode: a call with the same idempotency key was accepted within its TTL.
    Duplicate { first: String },
}

/// Where deliveries go.
pub enum Dispatcher {
    Direct(Arc<JenkinsClient>),
    Queue { store: Store, wake: Arc<Notify> },
}

impl Dispatcher {
    pub async fn dispatch(&self, delivery: &Delivery) -> Result<Dispatched, DispatchError> {
        match self {
            Dispatcher::Direct(jenkins) => {
                jenkins.invoke(delivery).await.map(Dispatched::Delivered)
            }
            Dispatcher::Queue { store, wake } => {
                let accepted = store
                    .accept(NewDelivery {
                        id: delivery.id.to_string(),
                        rule: delivery.rule.name.clone(),
                        jenkins: delivery.rule.dispatch.jenkins.clone(),
                        body: delivery.body.to_vec(),
                        content_type: delivery.content_type.as_str().to_owned(),
                        request_id: delivery.request_id.clone(),
                        idempotency: delivery.idempotency.clone(),
                    })
                    .await
                    .map_err(DispatchError::Store)?;
                match accepted {
                    Accepted::Stored => {
                        wake.notify_one();
                        Ok(Dispatched::Queued)
                    }
                    Accepted::Duplicate { first } => Ok(Dispatched::Duplicate { first }),
                }
            }
        }
    }

    pub fn store(&self) -> Option<&Store> {
        match self {
            Dispatcher::Direct(_) => None,
            Dispatcher::Queue { store, .. } => Some(store),
        }
    }
}
