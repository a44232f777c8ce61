//! The trigger path for the selected rules: verify → parse → extract → filter → dispatch, each
//! rule on its own, then one answer in GWT's shape.
//!
//! Invariant: the body is parsed only after at least one rule verified the request, and at most
//! once; a rule that failed a check contributes only `status: "rejected"` to the answer.
//! A call's matched deliveries are dispatched together (one transaction in queue mode), and a
//! verified signature is remembered only once its call was accepted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use ulid::Ulid;

use super::{AppState, State};
use crate::dispatch::{Delivery, DispatchError, Dispatched};
use crate::error::{ApiError, cause_chain, error_body, insert_retry_after};
use crate::extract::Variables;
use crate::metrics::Outcome;
use crate::pipeline::{self, Bodies, Evaluated, Evaluation, Stopped};
use crate::rules::Rule;
use crate::store::ReplayMark;
use crate::verify::ip::ClientAddr;
use crate::verify::replay::Claim;
use crate::verify::token::Candidate;
use crate::verify::{self, Inbound, Rejection, Replay};

/// Which check a rule failed, in the contract's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    Forbidden,
    Unauthorized,
    InvalidBody { line: usize, column: usize },
}

/// A rule's state after evaluation: finished, or matched with a delivery to make.
enum Stage {
    Done(Entry),
    Matched {
        evaluation: Evaluation,
        delivery: Delivery,
        /// The verified signature, remembered once the delivery is accepted.
        claim: Option<Claim>,
    },
}

enum Entry {
    Rejected(Check),
    Filtered(Evaluation),
    FilterFailed(Evaluation),
    /// The dispatch task ended without an answer (a bug): nothing is known to be accepted.
    Internal(Evaluation),
    DryRun(Evaluation),
    /// The rule's rate is used up; the wait until it accepts another call.
    RateLimited(Evaluation, std::time::Duration),
    /// Not dispatched because another rule of the same call was refused (429): a call is
    /// accepted whole or not at all, so the sender's retry cannot duplicate a rule.
    Withheld(Evaluation),
    /// The same signed request as a call already stored as `first`: the sender's retry of a
    /// request whose answer it lost. Nothing is dispatched again.
    Repeat {
        evaluation: Evaluation,
        first: String,
    },
    Dispatched {
        evaluation: Evaluation,
        delivery: Ulid,
        result: Result<Dispatched, DispatchError>,
    },
}

pub async fn run(
    state: &State,
    inbound: &Inbound<'_>,
    candidates: Vec<Candidate<'_>>,
    dry_run: bool,
    request_id: Option<&str>,
) -> HttpResponse {
    let now = SystemTime::now();
    let mut stages: Vec<(&Arc<Rule>, Stage)> = Vec::with_capacity(candidates.len());
    // The body is parsed once for every rule the token selected.
    let mut bodies = Bodies::new(candidates.len());
    // Signatures of rules that filtered the call: used up once the call as a whole is accepted.
    let mut filtered_claims = Vec::new();

    for candidate in candidates {
        let rule = candidate.rule();
        let name = rule.name.as_str();
        let (verified, replay) = match verify::check(candidate, inbound, now) {
            Ok(verified) => verified,
            Err(rejection) => {
                let (check, outcome) = match &rejection {
                    Rejection::Forbidden(_) => (Check::Forbidden, Outcome::Forbidden),
                    Rejection::Unauthorized(_) => (Check::Unauthorized, Outcome::Unauthorized),
                };
                tracing::warn!(rule = name, reason = %rejection, "Rule rejected the request.");
                state.metrics.request(name, outcome);
                stages.push((rule, Stage::Done(Entry::Rejected(check))));
                continue;
            }
        };
        // `matched` holds the idempotency key (if any) when the filter matched.
        let (evaluation, matched) = match pipeline::evaluate(&verified, &mut bodies) {
            Ok(Evaluated::Matched { evaluation, key }) => (evaluation, Some(key)),
            Ok(Evaluated::Filtered(evaluation)) => (evaluation, None),
            Err(Stopped::InvalidBody(error)) => {
                tracing::warn!(rule = name, reason = %error, "Body is not what the rule needs.");
                state.metrics.request(name, Outcome::BadRequest);
                let check = Check::InvalidBody {
                    line: error.line,
                    column: error.column,
                };
                stages.push((rule, Stage::Done(Entry::Rejected(check))));
                continue;
            }
            Err(Stopped::FilterFailed { evaluation, error }) => {
                tracing::error!(rule = name, error = %error, "Filter could not be evaluated.");
                state.metrics.request(name, Outcome::Failed);
                stages.push((rule, Stage::Done(Entry::FilterFailed(evaluation))));
                continue;
            }
        };
        let claim = match replay {
            Replay::Untracked => None,
            Replay::Fresh(claim) => Some(claim),
            Replay::Repeat { first } if !dry_run => {
                tracing::info!(rule = name, first = %first, "Repeat of a stored call (same signature); not dispatched again.");
                state.metrics.request(name, Outcome::Duplicate);
                stages.push((rule, Stage::Done(Entry::Repeat { evaluation, first })));
                continue;
            }
            Replay::Repeat { .. } => None,
        };
        let Some(key) = matched else {
            tracing::info!(rule = name, "Filter did not match; nothing dispatched.");
            state.metrics.request(name, Outcome::Filtered);
            filtered_claims.extend(claim);
            stages.push((rule, Stage::Done(Entry::Filtered(evaluation))));
            continue;
        };
        if dry_run {
            // Dropping the claim leaves the signature usable for the real call.
            tracing::info!(rule = name, "Dry run; nothing dispatched.");
            state.metrics.request(name, Outcome::DryRun);
            stages.push((rule, Stage::Done(Entry::DryRun(evaluation))));
        } else {
            if rule.idempotency.is_some() && key.is_none() {
                tracing::warn!(
                    rule = name,
                    "Call carries no idempotency key; it is not de-duplicated."
                );
            }
            let mark = claim.as_ref().map(|claim| ReplayMark {
                key: claim.key(),
                expires_at: claim.expires(),
            });
            let delivery = Delivery::prepare(
                &verified,
                &evaluation.variables,
                key.as_deref(),
                request_id,
                mark,
            );
            stages.push((
                rule,
                Stage::Matched {
                    evaluation,
                    delivery,
                    claim,
                },
            ));
        }
    }

    let stages = withhold_if_rate_limited(state, stages);
    let entries = dispatch(state, stages).await;
    // A filtered call was handled, so its signature is used up, unless the call was refused
    // (429, 503): then nothing of it counts, and the sender's retry must work.
    let refused = entries.iter().any(|(_, entry)| {
        matches!(
            entry,
            Entry::RateLimited(..)
                | Entry::Withheld(_)
                | Entry::Dispatched {
                    result: Err(DispatchError::Store(_)),
                    ..
                }
        )
    });
    if !refused && !dry_run {
        // The run hears of a filtered call before its answer, or the call is refused as a
        // whole (503, its signatures left usable), so the sender's retry can still end the run.
        if let Err(error) = report_filtered(state, &entries).await {
            return crate::error::ApiError::StoreUnavailable(error).error_response();
        }
        for claim in filtered_claims {
            claim.accept(None);
        }
    }
    respond(entries, dry_run)
}

/// When every rule that accepted the call filtered it out, each of them with a `[report]` tells
/// its Port run that no job was triggered (written before the answer, like a queued call).
async fn report_filtered(
    state: &AppState,
    entries: &[(&Arc<Rule>, Entry)],
) -> Result<(), crate::store::StoreError> {
    let Some(reporter) = &state.reporter else {
        return Ok(());
    };
    let only_filtered = entries
        .iter()
        .all(|(_, entry)| matches!(entry, Entry::Filtered(_) | Entry::Rejected(_)));
    if !only_filtered {
        return Ok(());
    }
    let effects: Vec<_> = entries
        .iter()
        .filter_map(|(rule, entry)| {
            let Entry::Filtered(evaluation) = entry else {
                return None;
            };
            let report = rule.report.as_ref()?;
            let run = report
                .run_id
                .render(&evaluation.variables)
                .filter(|run| crate::sinks::port::is_run_id(run))?;
            tracing::info!(rule = %rule.name, run = %run, "Telling the Port run that no job was triggered.");
            Some(crate::sinks::port::runs::filtered(
                &report.sink,
                &run,
                &rule.name,
            ))
        })
        .collect();
    reporter.record(effects, true).await
}

/// A per-rule rate limit that refuses one matched rule refuses the whole call, so that a 429
/// always means nothing of the call was accepted. Every matched rule's limit is checked, so
/// the answer names each one that is over its rate.
fn withhold_if_rate_limited<'r>(
    state: &AppState,
    stages: Vec<(&'r Arc<Rule>, Stage)>,
) -> Vec<(&'r Arc<Rule>, Stage)> {
    let waits: Vec<Option<std::time::Duration>> = stages
        .iter()
        .map(|(rule, stage)| match stage {
            Stage::Matched { .. } => state.limits.check_rule(&rule.name).err(),
            Stage::Done(_) => None,
        })
        .collect();
    if waits.iter().all(Option::is_none) {
        return stages;
    }
    stages
        .into_iter()
        .zip(waits)
        .map(|((rule, stage), wait)| {
            // The claim is dropped with the stage: the signature stays usable for the retry.
            let Stage::Matched { evaluation, .. } = stage else {
                return (rule, stage);
            };
            let name = rule.name.as_str();
            state.metrics.request(name, Outcome::RateLimited);
            let entry = match wait {
                Some(wait) => {
                    tracing::warn!(
                        rule = name,
                        retry_in_ms = wait.as_millis(),
                        "Rule rate limit reached; the call is not dispatched."
                    );
                    Entry::RateLimited(evaluation, wait)
                }
                None => {
                    tracing::warn!(
                        rule = name,
                        "Another rule of this call is rate-limited; the call is not dispatched."
                    );
                    Entry::Withheld(evaluation)
                }
            };
            (rule, Stage::Done(entry))
        })
        .collect()
}

/// Hands every matched delivery of the call to the dispatcher at once (one transaction in queue
/// mode, concurrent calls in direct mode), then remembers the signatures of those accepted.
///
/// This runs as a task of its own, so that once a call is handed over its outcome is recorded
/// with its signature even if the request's future were dropped meanwhile (a sender that gives
/// up, a forced shutdown): the sender's retry is then answered as a duplicate instead of storing
/// the call twice. (actix today runs a handler to completion after its client has gone; this
/// does not depend on it.)
async fn dispatch<'r>(
    state: &State,
    stages: Vec<(&'r Arc<Rule>, Stage)>,
) -> Vec<(&'r Arc<Rule>, Entry)> {
    let mut entries = Vec::with_capacity(stages.len());
    let mut matched = Vec::new();
    let mut deliveries = Vec::new();
    let mut claims = Vec::new();
    for (rule, stage) in stages {
        match stage {
            Stage::Done(entry) => entries.push((rule, entry)),
            Stage::Matched {
                evaluation,
                delivery,
                claim,
            } => {
                deliveries.push(delivery);
                claims.push(claim);
                matched.push((rule, evaluation));
            }
        }
    }
    if deliveries.is_empty() {
        return entries;
    }
    let started = Instant::now();
    let handed_over = actix_web::rt::spawn({
        let state = state.clone();
        async move {
            let results = state.dispatcher.dispatch_all(&deliveries).await;
            for ((claim, delivery), result) in claims.into_iter().zip(&deliveries).zip(&results) {
                if let Some(claim) = claim {
                    remember_if_accepted(claim, delivery, result);
                }
            }
            (deliveries, results)
        }
    });
    let (deliveries, results) = match handed_over.await {
        Ok(done) => done,
        // Only a panic in the dispatcher ends the task early; nothing is known to be accepted.
        Err(error) => {
            tracing::error!(%error, "Dispatching the call failed unexpectedly.");
            return entries
                .into_iter()
                .chain(
                    matched
                        .into_iter()
                        .map(|(rule, evaluation)| (rule, Entry::Internal(evaluation))),
                )
                .collect();
        }
    };
    let elapsed = started.elapsed();
    for (((rule, evaluation), delivery), result) in
        matched.into_iter().zip(&deliveries).zip(results)
    {
        record_dispatch(state, rule, delivery.id(), &result, elapsed);
        entries.push((
            rule,
            Entry::Dispatched {
                evaluation,
                delivery: delivery.id(),
                result,
            },
        ));
    }
    entries
}

/// Remembers a delivery's signature once the call was accepted, with the delivery it was stored
/// as; drops the claim (so the sender's retry is not a replay) when it was not.
fn remember_if_accepted(
    claim: Claim,
    delivery: &Delivery,
    result: &Result<Dispatched, DispatchError>,
) {
    match result {
        Ok(Dispatched::Queued) => claim.accept(Some(&delivery.id().to_string())),
        Ok(Dispatched::Duplicate { first }) => claim.accept(Some(first)),
        // Jenkins may have acted on a call whose answer timed out or was not GWT's: a retry of
        // it could start the job twice, so it is remembered too.
        Ok(Dispatched::Delivered(_))
        | Err(DispatchError::Timeout(_) | DispatchError::UnexpectedAnswer { .. }) => {
            claim.accept(None)
        }
        Err(_) => drop(claim),
    }
}

fn record_dispatch(
    state: &AppState,
    rule: &Rule,
    delivery: Ulid,
    result: &Result<Dispatched, DispatchError>,
    elapsed: std::time::Duration,
) {
    let delivery = delivery.to_string();
    let jenkins = rule.dispatch.jenkins.as_str();
    let rule = rule.name.as_str();
    match result {
        Ok(Dispatched::Delivered(answer)) => {
            state.metrics.jenkins_call(jenkins, "ok", elapsed);
            let outcome = if answer.triggered {
                Outcome::Triggered
            } else {
                Outcome::Filtered
            };
            state.metrics.request(rule, outcome);
            tracing::info!(
                rule,
                delivery,
                jenkins,
                queue_item = answer.id,
                triggered = answer.triggered,
                "Jenkins accepted the call."
            );
        }
        Ok(Dispatched::Queued) => {
            state.metrics.request(rule, Outcome::Queued);
            tracing::info!(rule, delivery, "Call stored for delivery.");
        }
        Ok(Dispatched::Duplicate { first }) => {
            state.metrics.request(rule, Outcome::Duplicate);
            tracing::info!(rule, first = %first, "Repeat of an accepted call; not dispatched again.");
        }
        Err(error @ DispatchError::Store(_)) => {
            state.metrics.request(rule, Outcome::Unavailable);
            tracing::error!(
                rule,
                delivery,
                error = %error,
                cause = %cause_chain(error),
                "Call could not be stored; not acknowledged."
            );
        }
        Err(error) => {
            state
                .metrics
                .jenkins_call(jenkins, error.metric_label(), elapsed);
            state.metrics.request(rule, Outcome::Failed);
            tracing::warn!(
                rule,
                delivery,
                jenkins,
                error = %error,
                cause = %cause_chain(error),
                "Jenkins call failed."
            );
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Triggered,
    Queued,
    Duplicate,
    Filtered,
    Failed,
    Rejected,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JobEntry<'e> {
    Rejected {
        triggered: bool,
        status: Status,
    },
    Evaluated {
        triggered: bool,
        status: Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivery: Option<String>,
        id: u64,
        url: &'e str,
        #[serde(rename = "regexpFilterText")]
        filter_text: &'e str,
        #[serde(rename = "regexpFilterExpression")]
        filter_expression: &'e str,
        #[serde(rename = "resolvedVariables")]
        variables: &'e Variables,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Serialize)]
struct TriggerBody<'e> {
    message: &'static str,
    jobs: BTreeMap<&'e str, JobEntry<'e>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<bool>,
}

fn respond(entries: Vec<(&Arc<Rule>, Entry)>, dry_run: bool) -> HttpResponse {
    // When every rule failed a check, the answer is the earliest failing check's error.
    let earliest = entries
        .iter()
        .map(|(_, entry)| match entry {
            Entry::Rejected(check) => Some(*check),
            _ => None,
        })
        .collect::<Option<Vec<Check>>>()
        .and_then(|checks| checks.into_iter().min());
    if let Some(check) = earliest {
        let error = match check {
            Check::Forbidden => ApiError::Forbidden(ClientAddr::Unknown),
            Check::Unauthorized => ApiError::Unauthorized,
            Check::InvalidBody { line, column } => ApiError::InvalidJson { line, column },
        };
        return error_body(error.status_code(), error.client_message(), dry_run);
    }

    let mut worst = Severity::Fine;
    let mut jobs = BTreeMap::new();
    for (rule, entry) in &entries {
        let (job, severity) = job_entry(rule, entry);
        worst = worst.max(severity);
        jobs.insert(rule.name.as_str(), job);
    }
    let message = if worst <= Severity::Accepted {
        "Triggered jobs."
    } else {
        "There were errors when triggering jobs."
    };
    let mut response = HttpResponse::build(worst.status()).json(TriggerBody {
        message,
        jobs,
        dry_run: dry_run.then_some(true),
    });
    if worst == Severity::RateLimited {
        let wait = entries
            .iter()
            .filter_map(|(_, entry)| match entry {
                Entry::RateLimited(_, wait) => Some(*wait),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        insert_retry_after(&mut response, wait);
    }
    response
}

/// How bad one rule's outcome is; the answer's status is that of the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Fine,
    /// Stored for delivery (queue mode): 202.
    Accepted,
    RateLimited,
    Timeout,
    BadGateway,
    Unavailable,
    Internal,
}

impl Severity {
    fn status(self) -> StatusCode {
        match self {
            Severity::Fine => StatusCode::OK,
            Severity::Accepted => StatusCode::ACCEPTED,
            Severity::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Severity::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Severity::BadGateway => StatusCode::BAD_GATEWAY,
            Severity::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Severity::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn job_entry<'e>(rule: &'e Rule, entry: &'e Entry) -> (JobEntry<'e>, Severity) {
    let evaluated = |evaluation: &'e Evaluation, status, triggered| JobEntry::Evaluated {
        triggered,
        status,
        delivery: None,
        id: 0,
        url: "",
        filter_text: &evaluation.rendered_text,
        filter_expression: rule.filter.expression(),
        variables: &evaluation.variables,
        error: None,
    };
    match entry {
        Entry::Rejected(_) => (
            JobEntry::Rejected {
                triggered: false,
                status: Status::Rejected,
            },
            Severity::Fine,
        ),
        Entry::Filtered(evaluation) => (
            evaluated(evaluation, Status::Filtered, false),
            Severity::Fine,
        ),
        Entry::DryRun(evaluation) => (
            evaluated(evaluation, Status::Triggered, true),
            Severity::Fine,
        ),
        Entry::RateLimited(evaluation, _) => {
            let mut job = evaluated(evaluation, Status::Failed, false);
            if let JobEntry::Evaluated { error, .. } = &mut job {
                *error = Some("This rule's rate limit is reached; retry later.".to_owned());
            }
            (job, Severity::RateLimited)
        }
        Entry::Withheld(evaluation) => {
            let mut job = evaluated(evaluation, Status::Failed, false);
            if let JobEntry::Evaluated { error, .. } = &mut job {
                *error = Some(
                    "Not dispatched: another rule of this call is rate-limited; retry later."
                        .to_owned(),
                );
            }
            (job, Severity::RateLimited)
        }
        Entry::Repeat { evaluation, first } => {
            let mut job = evaluated(evaluation, Status::Duplicate, true);
            if let JobEntry::Evaluated { delivery, .. } = &mut job {
                *delivery = Some(first.clone());
            }
            (job, Severity::Accepted)
        }
        Entry::FilterFailed(evaluation) => {
            let mut job = evaluated(evaluation, Status::Failed, false);
            if let JobEntry::Evaluated { error, .. } = &mut job {
                *error = Some("The filter could not be evaluated.".to_owned());
            }
            (job, Severity::Internal)
        }
        Entry::Internal(evaluation) => {
            let mut job = evaluated(evaluation, Status::Failed, false);
            if let JobEntry::Evaluated { error, .. } = &mut job {
                *error = Some("The call could not be handled; retry it.".to_owned());
            }
            (job, Severity::Internal)
        }
        Entry::Dispatched {
            evaluation,
            delivery,
            result,
        } => {
            let (status, triggered, severity) = match result {
                Ok(Dispatched::Delivered(answer)) if answer.triggered => {
                    (Status::Triggered, true, Severity::Fine)
                }
                Ok(Dispatched::Delivered(_)) => (Status::Filtered, false, Severity::Fine),
                Ok(Dispatched::Queued) => (Status::Queued, true, Severity::Accepted),
                Ok(Dispatched::Duplicate { .. }) => (Status::Duplicate, true, Severity::Accepted),
                Err(DispatchError::Timeout(_) | DispatchError::Busy(_)) => {
                    (Status::Failed, false, Severity::Timeout)
                }
                Err(DispatchError::Store(_)) => (Status::Failed, false, Severity::Unavailable),
                Err(_) => (Status::Failed, false, Severity::BadGateway),
            };
            let mut job = evaluated(evaluation, status, triggered);
            if let JobEntry::Evaluated {
                delivery: job_delivery,
                id,
                url,
                error,
                ..
            } = &mut job
            {
                *job_delivery = Some(delivery.to_string());
                match result {
                    Ok(Dispatched::Delivered(answer)) => {
                        *id = answer.id;
                        *url = &answer.url;
                    }
                    Ok(Dispatched::Queued) => {}
                    // The sender learns the id of the delivery that is (or was) made.
                    Ok(Dispatched::Duplicate { first }) => *job_delivery = Some(first.clone()),
                    Err(dispatch_error) => *error = Some(dispatch_error.client_message()),
                }
            }
            (job, severity)
        }
    }
}
