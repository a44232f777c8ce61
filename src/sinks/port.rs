//! What Port's run API receives from hookgate (PRODUCT.md "`kind = "port"`", reference/port.md
//! §3): the bodies of `PATCH /v1/actions/runs/{run_id}` and of the run log lines, built by pure
//! functions so `hookgate test-event` prints exactly what is sent, and the client that sends
//! them with an access token it caches.
//!
//! Port refuses a body with any key its schema does not list (422, `additionalProperties:
//! false`): every body here has only `status`, `statusLabel`, `link`, `summary` and
//! `externalRunId`, and a log line only `message`.

pub mod api;
pub mod runs;
pub mod target;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::events::model::{Event, Phase};

/// What a Notification event asks of its run's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// QUEUED and COMPLETED: hookgate reports the queue item when Jenkins accepts the trigger,
    /// and waits for FINALIZED, which carries the result, to end the run.
    Nothing,
    /// STARTED: the run is running, with its build's link.
    Running,
    /// FINALIZED: this build is over with `result`.
    Finished { result: String },
}

/// The step an event stands for.
pub fn step(event: &Event) -> Step {
    match event.build.phase {
        Phase::Started => Step::Running,
        Phase::Finalized => Step::Finished {
            // The plugin sends `status` on FINALIZED; a build without one did not finish
            // normally, which Port can only show as a failure.
            result: event
                .build
                .status
                .clone()
                .unwrap_or_else(|| "FAILURE".to_owned()),
        },
        Phase::Queued | Phase::Completed | Phase::None => Step::Nothing,
    }
}

/// The run a build names through its parameters: the first of `names` present and not blank,
/// with the parameter that named it.
pub fn run_from_parameters<'n>(event: &Event, names: &'n [String]) -> Option<(&'n str, String)> {
    names.iter().find_map(|name| {
        event
            .parameter(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(|value| (name.as_str(), value.to_owned()))
    })
}

/// The link of a build: its `full_url`, else its path under the Jenkins target's
/// `public_url` (Jenkins leaves `full_url` out when its root URL is not configured).
pub fn build_link(event: &Event, public_url: &str) -> String {
    event.build.full_url.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            public_url.trim_end_matches('/'),
            event.build_key().trim_start_matches('/')
        )
    })
}

/// Jenkins accepted the trigger: the queue items, as links people can open.
pub fn queued(links: &[String]) -> Value {
    if links.is_empty() {
        // GWT's silent response names no queue item.
        return json!({"statusLabel": "Queued in Jenkins"});
    }
    json!({"statusLabel": "Queued in Jenkins", "link": links})
}

/// A build of the run started (`links`: every build of the run known so far).
pub fn running(links: &[String], external_run_id: &str) -> Value {
    json!({"statusLabel": "Running", "link": links, "externalRunId": external_run_id})
}

/// One finished build of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub job: String,
    pub number: u64,
    pub result: String,
    pub duration_ms: Option<i64>,
    pub link: String,
}

impl Finished {
    pub fn from_event(event: &Event, result: &str, public_url: &str) -> Self {
        Self {
            job: event.job_name(),
            number: event.build.number,
            result: result.to_owned(),
            duration_ms: event.build.duration,
            link: build_link(event, public_url),
        }
    }

    /// `<job> #<n>: <result> after <duration>`.
    fn line(&self) -> String {
        match self.duration_ms {
            Some(ms) => format!(
                "{} #{}: {} after {}",
                self.job,
                self.number,
                self.result,
                duration_text(ms)
            ),
            None => format!("{} #{}: {}", self.job, self.number, self.result),
        }
    }
}

/// The run's end, once every build it started has finished: SUCCESS only if every one of them
/// succeeded. `statusLabel` is the Jenkins result (the worst one when several builds ran).
pub fn finished(builds: &[Finished]) -> Value {
    let success = !builds.is_empty() && builds.iter().all(|b| b.result == "SUCCESS");
    let label = worst_result(builds);
    let summary: Vec<String> = builds.iter().map(Finished::line).collect();
    let links: Vec<&str> = builds.iter().map(|b| b.link.as_str()).collect();
    json!({
        "status": if success { "SUCCESS" } else { "FAILURE" },
        "statusLabel": label,
        "summary": summary.join("; "),
        "link": links,
    })
}

/// Jenkins' results from worst to best (`hudson.model.Result`'s order).
const WORST_FIRST: [&str; 5] = ["FAILURE", "ABORTED", "NOT_BUILT", "UNSTABLE", "SUCCESS"];

fn worst_result(builds: &[Finished]) -> String {
    builds
        .iter()
        .map(|b| b.result.as_str())
        .min_by_key(|result| {
            WORST_FIRST
                .iter()
                .position(|known| known == result)
                .unwrap_or(0)
        })
        .unwrap_or("FAILURE")
        .to_owned()
}

/// What `hookgate test-event` shows for a port sink: which run the event would update, and the
/// body, when its phase sends one.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub run: String,
    pub update: Option<Value>,
}

/// The preview of `event` for a port sink reading `run_id_parameters`, with links under
/// `public_url`. Read alone: when serving, a FINALIZED of a run that started several jobs ends
/// it only with the last of them, and a queue item hookgate triggered names its run.
pub fn preview(event: &Event, run_id_parameters: &[String], public_url: &str) -> Preview {
    let run = match (
        run_from_parameters(event, run_id_parameters),
        event.build.queue_id,
    ) {
        (Some((name, run)), _) => format!("run {run} (build parameter {name})"),
        (None, Some(queue_id)) => format!(
            "the run whose trigger Jenkins answered with queue item {queue_id}, if hookgate triggered it (known only while serving); else none, and the sink skips the event"
        ),
        (None, None) => format!(
            "none: the build has no queue id and none of the parameters {}; the sink skips the event",
            run_id_parameters.join(", ")
        ),
    };
    let link = build_link(event, public_url);
    let update = match step(event) {
        Step::Nothing => None,
        Step::Running => Some(running(std::slice::from_ref(&link), &link)),
        Step::Finished { result } => Some(finished(&[Finished::from_event(
            event, &result, public_url,
        )])),
    };
    Preview { run, update }
}

/// The trigger was dead-lettered: Jenkins refused it, or its attempts ran out.
pub fn trigger_failed(reason: &str) -> Value {
    json!({"status": "FAILURE", "summary": format!("hookgate could not trigger Jenkins: {reason}")})
}

/// Jenkins accepted the trigger, but GWT scheduled no job: the job's own filter (in Jenkins)
/// did not match.
pub fn nothing_triggered() -> Value {
    json!({
        "status": "FAILURE",
        "summary": "No Jenkins job was triggered: Jenkins accepted the call, but no job's filter matched.",
    })
}

/// The run's end when Jenkins never reported some of its builds finished (`jobs`) before their
/// queue items expired: a failure, with the builds that did finish.
pub fn unreported(builds: &[Finished], jobs: &[String]) -> Value {
    let mut lines: Vec<String> = builds.iter().map(Finished::line).collect();
    lines.extend(
        jobs.iter()
            .map(|job| format!("{job}: Jenkins never reported its build's result")),
    );
    let links: Vec<&str> = builds.iter().map(|b| b.link.as_str()).collect();
    let mut update = json!({
        "status": "FAILURE",
        "statusLabel": "NOT_REPORTED",
        "summary": lines.join("; "),
    });
    if !links.is_empty() {
        update["link"] = json!(links);
    }
    update
}

/// A direct-mode trigger Jenkins did not answer: the run is told, not ended.
pub fn unanswered() -> Value {
    json!({"statusLabel": "Jenkins did not answer"})
}

/// Whether `run` can be a Port run id (`r_` and letters and digits, as Port makes them): what
/// goes into Port's URL is never a path of the sender's choosing.
pub fn is_run_id(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= 128
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Every rule of the call filtered it out.
pub fn filtered(rule: &str) -> Value {
    json!({
        "status": "FAILURE",
        "summary": format!("No Jenkins job was triggered: {rule}'s filter did not match."),
    })
}

/// The run log line that goes with an update: its summary, else its label and links.
pub fn log_line(update: &Value) -> Value {
    let text = |key: &str| update.get(key).and_then(Value::as_str);
    let links: Vec<&str> = update
        .get("link")
        .and_then(Value::as_array)
        .map(|links| links.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let message = match (text("summary"), text("statusLabel")) {
        (Some(summary), _) => summary.to_owned(),
        (None, Some(label)) if links.is_empty() => label.to_owned(),
        (None, Some(label)) => format!("{label}: {}", links.join(" ")),
        (None, None) => "hookgate updated the run".to_owned(),
    };
    json!({"message": message})
}

/// A duration as Jenkins writes it (`Util.getTimeSpanString`): `850 ms`, `3.2 sec`,
/// `1 min 3 sec`, `2 hr 5 min`, `1 day 4 hr`.
pub fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if ms < 1000 {
        format!("{ms} ms")
    } else if secs < 10 {
        format!("{}.{} sec", secs, (ms % 1000) / 100)
    } else if secs < 60 {
        format!("{secs} sec")
    } else if secs < 3600 {
        format!("{} min {} sec", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{} hr {} min", secs / 3600, (secs % 3600) / 60)
    } else {
        format!(
            "{} {} hr",
            plural(secs / 86_400, "day"),
            (secs % 86_400) / 3600
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINALIZED: &str =
        include_str!("../../examples/payloads/jenkins-freestyle-finalized.json");
    const STARTED: &str = include_str!("../../examples/payloads/jenkins-freestyle-started.json");
    const QUEUED: &str = include_str!("../../examples/payloads/jenkins-freestyle-queued.json");
    const COMPLETED: &str =
        include_str!("../../examples/payloads/jenkins-freestyle-completed.json");

    fn event(text: &str) -> Event {
        Event::parse(text.as_bytes()).expect("sample event")
    }

    /// The keys of Port's PATCH body schema (reference/port.md §3); anything else is a 422.
    const PATCH_KEYS: [&str; 6] = [
        "status",
        "statusLabel",
        "link",
        "summary",
        "externalRunId",
        "message",
    ];

    fn only_port_keys(update: &Value) {
        for key in update.as_object().expect("an object").keys() {
            assert!(PATCH_KEYS.contains(&key.as_str()), "Port refuses `{key}`");
        }
        assert!(update.get("message").is_none(), "`message` is deprecated");
    }

    #[test]
    fn each_phase_asks_for_its_step() {
        let check = |text: &str, expected: Step| assert_eq!(step(&event(text)), expected);
        check(QUEUED, Step::Nothing);
        check(STARTED, Step::Running);
        check(COMPLETED, Step::Nothing);
        check(
            FINALIZED,
            Step::Finished {
                result: event(FINALIZED).build.status.expect("status"),
            },
        );
    }

    #[test]
    fn durations_read_as_jenkins_writes_them() {
        let check = |ms: i64, expected: &str| assert_eq!(duration_text(ms), expected, "{ms}");
        check(0, "0 ms");
        check(850, "850 ms");
        check(3_250, "3.2 sec");
        check(12_000, "12 sec");
        check(63_000, "1 min 3 sec");
        check(3_600_000 + 5 * 60_000, "1 hr 5 min");
        check(86_400_000 + 4 * 3_600_000, "1 day 4 hr");
        check(2 * 86_400_000, "2 days 0 hr");
        check(-5, "0 ms");
    }

    #[test]
    fn a_run_ends_in_success_only_when_every_build_succeeded() {
        let build = |job: &str, result: &str| Finished {
            job: job.to_owned(),
            number: 7,
            result: result.to_owned(),
            duration_ms: Some(63_000),
            link: format!("https://ci.example.com/job/{job}/7/"),
        };
        let one = finished(&[build("deploy", "SUCCESS")]);
        only_port_keys(&one);
        assert_eq!(
            one,
            json!({
                "status": "SUCCESS",
                "statusLabel": "SUCCESS",
                "summary": "deploy #7: SUCCESS after 1 min 3 sec",
                "link": ["https://ci.example.com/job/deploy/7/"],
            })
        );
        let check = |results: &[&str], status: &str, label: &str| {
            let builds: Vec<Finished> = results
                .iter()
                .enumerate()
                .map(|(i, r)| build(&format!("job{i}"), r))
                .collect();
            let update = finished(&builds);
            assert_eq!(update["status"], status, "{results:?}");
            assert_eq!(update["statusLabel"], label, "{results:?}");
        };
        check(&["SUCCESS", "SUCCESS"], "SUCCESS", "SUCCESS");
        check(&["SUCCESS", "FAILURE"], "FAILURE", "FAILURE");
        check(&["UNSTABLE"], "FAILURE", "UNSTABLE");
        check(&["SUCCESS", "UNSTABLE", "ABORTED"], "FAILURE", "ABORTED");
        check(&["NOT_BUILT"], "FAILURE", "NOT_BUILT");
        check(&[], "FAILURE", "FAILURE");
    }

    #[test]
    fn every_update_has_only_keys_port_takes() {
        let links = ["https://ci.example.com/queue/item/42/".to_owned()];
        only_port_keys(&queued(&links));
        only_port_keys(&running(&links, "https://ci.example.com/job/deploy/7/"));
        only_port_keys(&trigger_failed("Jenkins answered 404"));
        only_port_keys(&filtered("port-deploy"));
        only_port_keys(&nothing_triggered());
        only_port_keys(&unanswered());
        only_port_keys(&unreported(&[], &["deploy".to_owned()]));
        assert_eq!(
            filtered("port-deploy")["summary"],
            "No Jenkins job was triggered: port-deploy's filter did not match."
        );
        assert_eq!(
            trigger_failed("Jenkins answered 404")["summary"],
            "hookgate could not trigger Jenkins: Jenkins answered 404"
        );
    }

    #[test]
    fn a_log_line_says_what_the_update_says() {
        let check = |update: Value, expected: &str| {
            let line = log_line(&update);
            assert_eq!(line, json!({"message": expected}));
        };
        check(
            queued(&["https://ci.example.com/queue/item/42/".to_owned()]),
            "Queued in Jenkins: https://ci.example.com/queue/item/42/",
        );
        check(
            filtered("r"),
            "No Jenkins job was triggered: r's filter did not match.",
        );
        check(json!({"statusLabel": "Running", "link": []}), "Running");
    }

    #[test]
    fn the_run_comes_from_the_first_parameter_present() {
        let mut started = event(STARTED);
        started.build.parameters = vec![
            ("RUN_ID".to_owned(), "r_second".to_owned()),
            ("PORT_RUN_ID".to_owned(), "  ".to_owned()),
        ];
        let names = ["PORT_RUN_ID".to_owned(), "RUN_ID".to_owned()];
        assert_eq!(
            run_from_parameters(&started, &names),
            Some(("RUN_ID", "r_second".to_owned())),
            "a blank value does not name a run"
        );
        started.build.parameters.clear();
        assert_eq!(run_from_parameters(&started, &names), None);
    }
}
