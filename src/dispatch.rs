//! Dispatch: turning a verified, extracted call into a delivery and handing it to Jenkins.
//!
//! [`Dispatcher`] is the one seam between the request path and Jenkins. Today it calls Jenkins
//! inside the request (`delivery.mode = "direct"`); a durable queue slots in behind the same
//! `dispatch` call.

pub mod jenkins;

use std::sync::Arc;

use actix_web::web::Bytes;
use ulid::Ulid;

use crate::extract::Variables;
use crate::rules::Rule;
use crate::rules::model::BodyMode;
use crate::verify::Verified;
pub use jenkins::{DispatchError, JenkinsAnswer, JenkinsClient};

/// One call to deliver to Jenkins. Built only from a [`Verified`] request.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Ulid,
    pub rule: Arc<Rule>,
    /// What Jenkins receives, chosen by the rule's `dispatch.body`.
    pub body: Bytes,
}

impl Delivery {
    pub fn prepare(verified: &Verified<'_>, variables: &Variables) -> Self {
        let rule = verified.rule();
        let body = match rule.dispatch.body {
            BodyMode::Original => verified.inbound().body.clone(),
            // A map of strings always serialises.
            BodyMode::Variables => {
                Bytes::from(serde_json::to_vec(variables).unwrap_or_else(|_| b"{}".to_vec()))
            }
        };
        Self {
            id: Ulid::generate(),
            rule: Arc::clone(rule),
            body,
        }
    }
}

/// Where deliveries go.
pub struct Dispatcher {
    jenkins: JenkinsClient,
}

impl Dispatcher {
    pub fn direct(jenkins: JenkinsClient) -> Self {
        Self { jenkins }
    }

    /// Delivers now and returns Jenkins' answer.
    pub async fn dispatch(&self, delivery: &Delivery) -> Result<JenkinsAnswer, DispatchError> {
        self.jenkins.invoke(delivery).await
    }
}
