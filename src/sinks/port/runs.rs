//! Closing the loop of a Port run: what each step of a reported call (Jenkins' answer, a dead
//! trigger, a filtered call, a build event) leads to, as effects the store writes with the step
//! that decided them. Every update of a run is a delivery of the outbox, ordered per run; the
//! store keeps which runs have had their one terminal update and which builds of a run have
//! finished, so these functions only decide, and never race.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ulid::Ulid;

use super::{Finished, Step};
use crate::events::model::Event;
use crate::store::{Effect, Next, RunLookup, target_id};

/// How long a build event whose run is not known yet waits for a reported trigger to that
/// Jenkins to be answered (PRODUCT.md: up to 60 s) before the port sink skips it.
pub const WAIT_FOR_TRIGGER: Duration = Duration::from_secs(60);

/// One update of a run, as its delivery stores it; the body Port receives is made when it is
/// sent ([`Update::body`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "update", rename_all = "snake_case")]
pub enum Update {
    /// Jenkins accepted the trigger: its queue items' links.
    Queued { links: Vec<String> },
    /// A build of the run started.
    Running { link: String },
    /// Every build of the run finished (the store queues this one).
    Finished { builds: Vec<Finished> },
    /// The trigger was dead-lettered.
    TriggerFailed { reason: String },
    /// Every rule of the call filtered it out (`rule`: the reported one).
    Filtered { rule: String },
    /// Jenkins accepted the trigger but GWT scheduled no job (the job's own filter, in Jenkins).
    NothingTriggered,
    /// Some of the run's builds were never reported finished before their queue items expired
    /// (`jobs`); `builds` are those that were (the store queues this one).
    Unreported {
        builds: Vec<Finished>,
        jobs: Vec<String>,
    },
    /// A direct-mode call Jenkins did not answer (in time, or with GWT's answer): it may have
    /// acted, so the run is not ended.
    Unanswered { reason: String },
}

impl Update {
    /// The body of `PATCH /v1/actions/runs/{run_id}`.
    pub fn body(&self) -> Value {
        match self {
            Update::Queued { links } => super::queued(links),
            Update::Running { link } => super::running(std::slice::from_ref(link), link),
            Update::Finished { builds } => super::finished(builds),
            Update::TriggerFailed { reason } => super::trigger_failed(reason),
            Update::Filtered { rule } => super::filtered(rule),
            Update::NothingTriggered => super::nothing_triggered(),
            Update::Unanswered { .. } => super::unanswered(),
            Update::Unreported { builds, jobs } => super::unreported(builds, jobs),
        }
    }

    /// The run log line that goes with it.
    pub fn log(&self) -> Value {
        match self {
            Update::Unanswered { reason } => serde_json::json!({
                "message": format!("Jenkins did not answer the trigger, so the build may still run: {reason}")
            }),
            _ => super::log_line(&self.body()),
        }
    }

    /// Whether it ends the run (Port's `status`): at most one such update per run is sent.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Update::Queued { .. } | Update::Running { .. } | Update::Unanswered { .. }
        )
    }
}

/// A run update delivery's stored body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub run: String,
    #[serde(flatten)]
    pub update: Update,
}

/// The effect that queues `update` of `run` for the port sink `sink`.
pub fn queue(sink: &str, run: &str, update: Update) -> Effect {
    let terminal = update.is_terminal();
    let intent = Intent {
        run: run.to_owned(),
        update,
    };
    Effect::Update {
        sink: sink.to_owned(),
        run_id: run.to_owned(),
        delivery_id: Ulid::generate().to_string(),
        // A struct of strings always serialises.
        body: serde_json::to_string(&intent).unwrap_or_default(),
        terminal,
    }
}

/// A reported trigger's stored run (`report` column, `{"sink", "run"}`).
#[derive(Debug, Deserialize)]
struct StoredReport {
    sink: String,
    run: String,
}

/// What the decided outcome of a reported trigger to `jenkins` (its target id) leads to:
/// accepted, its queue items belong to the run for `ttl` and the run is "Queued in Jenkins"
/// (links under `public_url`); dead, the run fails with the reason. A retry changes nothing.
pub fn trigger_outcome(
    jenkins: &str,
    report: Option<&str>,
    next: &Next,
    ttl: Duration,
    public_url: &str,
) -> Vec<Effect> {
    let Some(report) = report.and_then(|text| serde_json::from_str::<StoredReport>(text).ok())
    else {
        return Vec::new();
    };
    match next {
        Next::Retry { .. } | Next::Wait { .. } => Vec::new(),
        Next::Dead { reason } => vec![queue(
            &report.sink,
            &report.run,
            Update::TriggerFailed {
                reason: reason.clone(),
            },
        )],
        // GWT's silent response names no queue item: the run is queued, and only builds that
        // name it through their parameters can end it.
        Next::Done { receipt: None } => vec![queue(
            &report.sink,
            &report.run,
            Update::Queued { links: Vec::new() },
        )],
        Next::Done {
            receipt: Some(receipt),
        } => {
            let items = queue_items(receipt);
            if items.is_empty() {
                return vec![queue(&report.sink, &report.run, Update::NothingTriggered)];
            }
            let links = items
                .iter()
                .map(|(_, _, url)| link_under(public_url, url))
                .collect();
            vec![
                Effect::Correlate {
                    jenkins: jenkins.to_owned(),
                    sink: report.sink.clone(),
                    run_id: report.run.clone(),
                    items: items.into_iter().map(|(id, job, _)| (id, job)).collect(),
                    ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
                },
                queue(&report.sink, &report.run, Update::Queued { links }),
            ]
        }
    }
}

/// The queue items (id, job, url) of a trigger's receipt (`{"jobs": [{"job", "id", "url"}]}`).
fn queue_items(receipt: &str) -> Vec<(u64, String, String)> {
    let receipt: Value = serde_json::from_str(receipt).unwrap_or_default();
    receipt["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .filter_map(|item| {
                    Some((
                        item["id"].as_u64()?,
                        item["job"].as_str().unwrap_or_default().to_owned(),
                        item["url"].as_str().unwrap_or_default().to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A reported direct-mode call that Jenkins did not answer in time, or answered with something
/// that is not GWT's: Jenkins may have acted on it, so the run hears of it but is not ended.
pub fn trigger_unanswered(report: &str, reason: &str) -> Vec<Effect> {
    serde_json::from_str::<StoredReport>(report)
        .map(|report| {
            vec![queue(
                &report.sink,
                &report.run,
                Update::Unanswered {
                    reason: reason.to_owned(),
                },
            )]
        })
        .unwrap_or_default()
}

/// `path` (GWT's `queue/item/<id>/`) under the Jenkins target's public URL.
fn link_under(public_url: &str, path: &str) -> String {
    format!(
        "{}/{}",
        public_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Every rule of a call filtered it out: each reported rule's run fails.
pub fn filtered(sink: &str, run: &str, rule: &str) -> Effect {
    queue(
        sink,
        run,
        Update::Filtered {
            rule: rule.to_owned(),
        },
    )
}

/// What a port sink decided about one build event, kept as its delivery's receipt (operators see
/// it in `deliveries show`) and turned into effects with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Skipped {
        reason: String,
    },
    Running {
        run: String,
        link: String,
    },
    Finished {
        run: String,
        /// The Jenkins target id the build ran on.
        jenkins: String,
        queue_id: Option<u64>,
        build: Finished,
    },
}

impl Decision {
    /// What the decision leads to, for the port sink `sink`.
    pub fn effects(self, sink: &str) -> Vec<Effect> {
        match self {
            Decision::Skipped { .. } => Vec::new(),
            Decision::Running { run, link } => vec![queue(sink, &run, Update::Running { link })],
            Decision::Finished {
                run,
                jenkins,
                queue_id,
                build,
            } => vec![Effect::Finished {
                sink: sink.to_owned(),
                run_id: run,
                jenkins,
                queue_id,
                // A struct of strings and numbers always serialises.
                build: serde_json::to_string(&build).unwrap_or_default(),
                delivery_id: Ulid::generate().to_string(),
            }],
        }
    }
}

/// Which run an event belongs to, for a port sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Run(String),
    /// Not known yet, and a reported trigger to its Jenkins is still unanswered: ask again soon.
    Wait,
    Skip(String),
}

/// The run of `event` for the port sink `sink`: the one its queue item was recorded for, else
/// the first of `run_id_parameters` it has, else none. While a reported trigger to its Jenkins
/// is unanswered (`waiting`) and the event is `young`, a build with a queue id waits instead:
/// its queue item may be that trigger's.
pub fn resolve(
    sink: &str,
    event: &Event,
    lookup: &RunLookup,
    young: bool,
    run_id_parameters: &[String],
) -> Resolution {
    if let Some((recorded_sink, run)) = &lookup.run {
        return if recorded_sink == sink {
            Resolution::Run(run.clone())
        } else {
            Resolution::Skip(format!(
                "the build's run is reported to port sink `{recorded_sink}`"
            ))
        };
    }
    if lookup.trigger_pending && young && event.build.queue_id.is_some() {
        return Resolution::Wait;
    }
    match super::run_from_parameters(event, run_id_parameters) {
        Some((_, run)) if super::is_run_id(&run) => Resolution::Run(run),
        Some((name, _)) => Resolution::Skip(format!(
            "build parameter {name} does not hold a Port run id"
        )),
        None => Resolution::Skip(format!(
            "the build belongs to no Port run: hookgate did not trigger its queue item, and it has none of the parameters {}",
            run_id_parameters.join(", ")
        )),
    }
}

/// The decision for `event` of the Jenkins target named `jenkins`, once its run is resolved.
pub fn decide(
    event: &Event,
    jenkins: &str,
    resolution: Resolution,
    public_url: &str,
) -> Option<Decision> {
    let run = match resolution {
        Resolution::Wait => return None,
        Resolution::Skip(reason) => return Some(Decision::Skipped { reason }),
        Resolution::Run(run) => run,
    };
    Some(match super::step(event) {
        Step::Nothing => Decision::Skipped {
            reason: format!("{} sends nothing to Port", event.build.phase.as_str()),
        },
        Step::Running => Decision::Running {
            run,
            link: super::build_link(event, public_url),
        },
        Step::Finished { result } => Decision::Finished {
            run,
            jenkins: target_id("jenkins", jenkins),
            queue_id: event.build.queue_id,
            build: Finished::from_event(event, &result, public_url),
        },
    })
}

/// Reported direct-mode calls whose answer is not recorded yet, by Jenkins target and by run: a
/// build event of that Jenkins may be theirs, so its port sink waits for them as for a pending
/// queued trigger, and a run does not end while one of its calls is in flight.
#[derive(Debug, Default)]
pub struct Unrecorded(Mutex<HashMap<String, usize>>);

impl Unrecorded {
    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn jenkins_key(jenkins: &str) -> String {
        format!("jenkins {jenkins}")
    }

    fn run_key(report: &str) -> String {
        format!("run {report}")
    }

    /// Counts one call to `jenkins` (a target name) for the run `report` (the `report` column's
    /// text) until the guard is dropped.
    pub fn begin(&self, jenkins: &str, report: &str) -> UnrecordedGuard<'_> {
        let keys = [Self::jenkins_key(jenkins), Self::run_key(report)];
        let mut counts = self.counts();
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        UnrecordedGuard { of: self, keys }
    }

    fn any_of(&self, key: &str) -> bool {
        self.counts().get(key).is_some_and(|n| *n > 0)
    }

    /// Whether a call to the Jenkins target `jenkins` is in flight.
    pub fn any(&self, jenkins: &str) -> bool {
        self.any_of(&Self::jenkins_key(jenkins))
    }

    /// Whether a call for the run `run` of the port sink `sink` is in flight.
    pub fn any_for_run(&self, sink: &str, run: &str) -> bool {
        self.any_of(&Self::run_key(&crate::store::report_text(sink, run)))
    }
}

/// One reported direct-mode call in flight; dropping it (its effects written, or the request
/// gone) ends it.
pub struct UnrecordedGuard<'a> {
    of: &'a Unrecorded,
    keys: [String; 2],
}

impl Drop for UnrecordedGuard<'_> {
    fn drop(&mut self) {
        let mut counts = self.of.counts();
        for key in &self.keys {
            if let Some(n) = counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{"run":"r_1","sink":"port"}"#;

    fn updates(effects: &[Effect]) -> Vec<(String, Intent, bool)> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Update {
                    sink,
                    body,
                    terminal,
                    ..
                } => Some((
                    sink.clone(),
                    serde_json::from_str(body).expect("intent"),
                    *terminal,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_accepted_reported_trigger_names_its_run_and_queues_queued_in_jenkins() {
        let receipt = r#"{"jobs":[{"job":"a","id":7,"url":"queue/item/7/"},{"job":"b","id":8,"url":"queue/item/8/"}]}"#;
        let done = Next::Done {
            receipt: Some(receipt.into()),
        };
        let ttl = Duration::from_secs(60);
        let effects = trigger_outcome(
            "jenkins:main",
            Some(REPORT),
            &done,
            ttl,
            "https://ci.example.com/",
        );
        assert_eq!(
            effects[0],
            Effect::Correlate {
                jenkins: "jenkins:main".into(),
                sink: "port".into(),
                run_id: "r_1".into(),
                items: vec![(7, "a".into()), (8, "b".into())],
                ttl_ms: 60_000,
            }
        );
        assert_eq!(
            updates(&effects),
            [(
                "port".to_owned(),
                Intent {
                    run: "r_1".into(),
                    update: Update::Queued {
                        links: vec![
                            "https://ci.example.com/queue/item/7/".into(),
                            "https://ci.example.com/queue/item/8/".into()
                        ]
                    }
                },
                false
            )]
        );
        // check(report, next, the updates queued)
        let check = |report: Option<&str>, next: Next, expected: Vec<Update>| {
            let effects = trigger_outcome("jenkins:main", report, &next, ttl, "https://ci");
            let got: Vec<Update> = updates(&effects).into_iter().map(|u| u.1.update).collect();
            assert_eq!(got, expected, "{report:?} {next:?}");
        };
        check(None, done.clone(), vec![]);
        check(Some("not json"), done.clone(), vec![]);
        check(Some(REPORT), Next::Retry { at_ms: 1 }, vec![]);
        check(
            Some(REPORT),
            Next::Dead {
                reason: "Jenkins answered 404".into(),
            },
            vec![Update::TriggerFailed {
                reason: "Jenkins answered 404".into(),
            }],
        );
        // GWT accepted the call, but the job's filter in Jenkins scheduled nothing…
        check(
            Some(REPORT),
            Next::Done {
                receipt: Some(r#"{"jobs":[]}"#.into()),
            },
            vec![Update::NothingTriggered],
        );
        // …while its silent response says nothing of what it scheduled.
        check(
            Some(REPORT),
            Next::Done { receipt: None },
            vec![Update::Queued { links: vec![] }],
        );
        // A receipt from before schema 4 names no job: the item still belongs to the run.
        let old = Next::Done {
            receipt: Some(r#"{"jobs":[{"id":5,"url":"queue/item/5/"}]}"#.into()),
        };
        assert!(matches!(
            &trigger_outcome("jenkins:main", Some(REPORT), &old, ttl, "https://ci")[0],
            Effect::Correlate { items, .. } if *items == vec![(5, String::new())]
        ));
    }

    #[test]
    fn only_updates_with_a_status_end_a_run() {
        let finished = Update::Finished { builds: vec![] };
        for (update, terminal) in [
            (Update::Queued { links: vec![] }, false),
            (Update::Running { link: "l".into() }, false),
            (finished, true),
            (Update::TriggerFailed { reason: "r".into() }, true),
            (Update::Filtered { rule: "r".into() }, true),
            (Update::NothingTriggered, true),
            (Update::Unanswered { reason: "r".into() }, false),
            (
                Update::Unreported {
                    builds: vec![],
                    jobs: vec!["j".into()],
                },
                true,
            ),
        ] {
            assert_eq!(update.is_terminal(), terminal, "{update:?}");
            assert_eq!(
                update.body().get("status").is_some(),
                terminal,
                "{update:?}"
            );
        }
    }

    #[test]
    fn the_stores_unreported_update_is_an_intent_that_fails_the_run() {
        let build = Finished {
            job: "deploy-api".into(),
            number: 4,
            result: "SUCCESS".into(),
            duration_ms: Some(61_000),
            link: "https://ci/job/deploy-api/4/".into(),
        };
        let text = crate::store::unreported_update(
            "r_1",
            &[serde_json::to_value(&build).expect("record")],
            &["deploy-worker".to_owned()],
        );
        let intent: Intent = serde_json::from_str(&text).expect("intent");
        assert!(intent.update.is_terminal());
        assert_eq!(
            intent.update.body(),
            serde_json::json!({
                "status": "FAILURE",
                "statusLabel": "NOT_REPORTED",
                "summary": "deploy-api #4: SUCCESS after 1 min 1 sec; deploy-worker: Jenkins never reported its build's result",
                "link": ["https://ci/job/deploy-api/4/"],
            })
        );
    }

    #[test]
    fn the_stores_finished_update_is_an_intent() {
        let build = Finished {
            job: "deploy".into(),
            number: 3,
            result: "SUCCESS".into(),
            duration_ms: Some(1500),
            link: "https://ci/job/deploy/3/".into(),
        };
        let text =
            crate::store::finished_update("r_1", &[serde_json::to_value(&build).expect("record")]);
        let intent: Intent = serde_json::from_str(&text).expect("intent");
        assert_eq!(
            intent,
            Intent {
                run: "r_1".into(),
                update: Update::Finished {
                    builds: vec![build]
                }
            }
        );
    }

    const STARTED: &str = include_str!("../../../examples/payloads/jenkins-freestyle-started.json");

    fn event(queue_id: Option<u64>, parameters: &[(&str, &str)]) -> Event {
        let mut value: Value = serde_json::from_str(STARTED).expect("payload");
        match queue_id {
            Some(id) => value["build"]["queue_id"] = id.into(),
            None => {
                value["build"].as_object_mut().unwrap().remove("queue_id");
            }
        }
        let parameters: serde_json::Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        value["build"]["parameters"] = Value::Object(parameters);
        Event::parse(value.to_string().as_bytes()).expect("event")
    }

    #[test]
    fn an_events_run_is_its_queue_items_else_its_parameters_else_none() {
        let names = ["PORT_RUN_ID".to_owned(), "RUN_ID".to_owned()];
        let recorded = |sink: &str| RunLookup {
            run: Some((sink.to_owned(), "r_rec".to_owned())),
            trigger_pending: false,
        };
        let pending = RunLookup {
            run: None,
            trigger_pending: true,
        };
        let none = RunLookup::default();
        // check(event, lookup, young, expected)
        let check = |event: &Event, lookup: &RunLookup, young: bool, expected: Resolution| {
            assert_eq!(
                resolve("port", event, lookup, young, &names),
                expected,
                "{lookup:?} young={young}"
            );
        };
        let plain = event(Some(9), &[]);
        let named = event(Some(9), &[("RUN_ID", "r_param")]);
        let both = event(
            Some(9),
            &[("PORT_RUN_ID", "r_first"), ("RUN_ID", "r_second")],
        );
        check(
            &plain,
            &recorded("port"),
            true,
            Resolution::Run("r_rec".into()),
        );
        // The recorded run wins over a parameter.
        check(
            &named,
            &recorded("port"),
            true,
            Resolution::Run("r_rec".into()),
        );
        check(
            &plain,
            &recorded("other"),
            true,
            Resolution::Skip("the build's run is reported to port sink `other`".into()),
        );
        check(&named, &none, true, Resolution::Run("r_param".into()));
        check(&both, &none, true, Resolution::Run("r_first".into()));
        // A trigger to this Jenkins is unanswered: the item may be its, so the event waits…
        check(&plain, &pending, true, Resolution::Wait);
        check(&named, &pending, true, Resolution::Wait);
        // …until it is too old, or when it has no queue id to be recorded under.
        check(&named, &pending, false, Resolution::Run("r_param".into()));
        check(&event(None, &[]), &pending, true, Resolution::Skip(
            "the build belongs to no Port run: hookgate did not trigger its queue item, and it has none of the parameters PORT_RUN_ID, RUN_ID".into(),
        ));
        assert!(matches!(
            resolve("port", &plain, &none, true, &names),
            Resolution::Skip(_)
        ));
        // A parameter that cannot be a run id never reaches Port's URL.
        check(
            &event(Some(9), &[("RUN_ID", "../../v1/blueprints")]),
            &none,
            true,
            Resolution::Skip("build parameter RUN_ID does not hold a Port run id".into()),
        );
    }

    #[test]
    fn unrecorded_direct_calls_are_counted_per_jenkins_and_run_while_in_flight() {
        let unrecorded = Unrecorded::default();
        assert!(!unrecorded.any("main"));
        let r1 = crate::store::report_text("port", "r_1");
        let r2 = crate::store::report_text("port", "r_2");
        let first = unrecorded.begin("main", &r1);
        let second = unrecorded.begin("main", &r2);
        assert!(unrecorded.any("main") && !unrecorded.any("other"));
        assert!(unrecorded.any_for_run("port", "r_1") && unrecorded.any_for_run("port", "r_2"));
        assert!(!unrecorded.any_for_run("other", "r_1"));
        drop(first);
        assert!(unrecorded.any("main") && !unrecorded.any_for_run("port", "r_1"));
        drop(second);
        assert!(!unrecorded.any("main") && !unrecorded.any_for_run("port", "r_2"));
        assert!(unrecorded.counts().is_empty(), "nothing is kept once done");
    }
}
