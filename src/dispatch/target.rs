//! Jenkins as a target of the outbox: a stored trigger is re-sent as the [`Call`] it was
//! accepted as, to GWT's invoke endpoint, and its answer read as the retry table says.

use std::sync::Arc;
use std::time::Instant;

use actix_web::web::Bytes;
use ulid::Ulid;

use super::{Call, ContentType, DispatchError, JenkinsAnswer, JenkinsClient};
use crate::error::cause_chain;
use crate::metrics::Metrics;
use crate::outbox::{AttemptFuture, Attempted, Job, RetryPolicy, Target, Verdict};
use crate::rules::RuleSet;
use crate::store::Payload;

/// One `[jenkins.<name>]` as the outbox worker sees it.
pub struct JenkinsTarget {
    name: String,
    client: Arc<JenkinsClient>,
    rules: Arc<RuleSet>,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
}

impl JenkinsTarget {
    pub fn new(
        name: &str,
        client: Arc<JenkinsClient>,
        rules: Arc<RuleSet>,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            name: name.to_owned(),
            client,
            rules,
            metrics,
            policy,
        }
    }

    async fn send(&self, job: &Job) -> Attempted {
        let Some(rule) = job.rule.as_deref().and_then(|name| self.rules.get(name)) else {
            return Attempted::permanent(format!(
                "rule `{}` is no longer loaded",
                job.rule.as_deref().unwrap_or("")
            ));
        };
        let Ok(id) = Ulid::from_string(&job.id) else {
            return Attempted::permanent("the stored delivery id is not a ULID");
        };
        let Payload::Body(body) = &job.payload else {
            return Attempted::permanent("a Jenkins delivery without a stored call");
        };
        let call = Call {
            id,
            rule: Arc::clone(rule),
            body: Bytes::from(body.clone()),
            content_type: ContentType::parse(&job.content_type),
        };
        let started = Instant::now();
        let result = self.client.invoke(&call).await;
        self.metrics.jenkins_call(
            &self.name,
            result
                .as_ref()
                .err()
                .map_or("ok", DispatchError::metric_label),
            started.elapsed(),
        );
        attempted(&result)
    }
}

impl Target for JenkinsTarget {
    fn max_in_flight(&self) -> usize {
        self.client.max_in_flight(&self.name)
    }

    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn attempt<'a>(&'a self, job: &'a Job) -> AttemptFuture<'a> {
        Box::pin(self.send(job))
    }
}

/// How a Jenkins answer decides the delivery's fate.
pub fn classify(result: &Result<JenkinsAnswer, DispatchError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Delivered,
        Err(
            DispatchError::Timeout(_) | DispatchError::Unreachable(_) | DispatchError::Store(_),
        ) => Verdict::Retry { retry_after: None },
        Err(DispatchError::Status { code, retry_after }) => {
            Verdict::for_status(*code, *retry_after)
        }
        // A page that is not GWT's (a login form, a wrong URL behind a proxy) needs a person.
        Err(DispatchError::UnknownTarget(_) | DispatchError::UnexpectedAnswer { .. }) => {
            Verdict::Permanent
        }
    }
}

/// The receipt of an accepted trigger: the queue items GWT's answer names.
fn receipt(answer: &JenkinsAnswer) -> Option<String> {
    (answer.id != 0).then(|| {
        serde_json::json!({ "jobs": [{ "id": answer.id, "url": answer.url }] }).to_string()
    })
}

fn attempted(result: &Result<JenkinsAnswer, DispatchError>) -> Attempted {
    let status = match result {
        Ok(answer) => Some(answer.status),
        Err(DispatchError::Status { code, .. }) => Some(*code),
        Err(_) => None,
    };
    let error = result.as_ref().err().map(|error| {
        let chain = cause_chain(error);
        if chain.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {chain}")
        }
    });
    Attempted {
        verdict: classify(result),
        status,
        error,
        receipt: result.as_ref().ok().and_then(receipt),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn classification_follows_the_retry_table() {
        let status = |code, retry_after| Err(DispatchError::Status { code, retry_after });
        let answer = Ok(JenkinsAnswer {
            status: 200,
            triggered: true,
            id: 1,
            url: "queue/item/1/".into(),
        });
        assert_eq!(classify(&answer), Verdict::Delivered);
        assert_eq!(
            attempted(&answer).receipt.as_deref(),
            Some(r#"{"jobs":[{"id":1,"url":"queue/item/1/"}]}"#)
        );
        assert_eq!(
            classify(&status(500, None)),
            Verdict::Retry { retry_after: None }
        );
        let later = Some(Duration::from_secs(7));
        assert_eq!(
            classify(&status(503, later)),
            Verdict::Retry { retry_after: later }
        );
        for code in [408, 429] {
            assert_eq!(
                classify(&status(code, None)),
                Verdict::Retry { retry_after: None }
            );
        }
        assert_eq!(
            classify(&Err(DispatchError::Timeout(Duration::from_secs(1)))),
            Verdict::Retry { retry_after: None }
        );
        for code in [400, 401, 403, 404, 410] {
            assert_eq!(classify(&status(code, None)), Verdict::Permanent, "{code}");
        }
        assert_eq!(
            classify(&Err(DispatchError::UnknownTarget("x".into()))),
            Verdict::Permanent
        );
    }
}
