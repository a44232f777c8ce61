//! Alert and resolve events for on-call tools, classified as itoc360 classifies Jenkins builds
//! (PRODUCT.md "`kind = "alert"`", vendor/itoc360-jenkins-integration.txt, `jenkins-events.md`
//! §3), in the vendor-neutral shape of itoc360's events API.
//!
//! The id is one per job, not per build, so the next successful build of a job resolves the
//! alert that a failed one raised.

use serde_json::{Map, Value, json};

use crate::events::model::{Event, Phase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Alert,
    Resolve,
}

impl Classification {
    /// The events API's `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Alert => "trigger",
            Classification::Resolve => "resolve",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// itoc360's rule: "A build reaching FINALIZED with status SUCCESS is treated as a RESOLVE; any
/// other phase or a failed build is treated as an ALERT". Priority: FAILURE high; UNSTABLE and
/// ABORTED medium (the page), NOT_BUILT medium too (PRODUCT.md); SUCCESS, or no result yet, low.
/// A result Jenkins does not have (`jenkins-events.md` §1.5 lists all five) is neither a success
/// nor a known failure, so medium.
pub fn classify(phase: Phase, status: Option<&str>) -> (Classification, Severity) {
    let classification = match (phase, status) {
        (Phase::Finalized, Some("SUCCESS")) => Classification::Resolve,
        _ => Classification::Alert,
    };
    let severity = match status {
        Some("FAILURE") => Severity::High,
        Some("SUCCESS") | None => Severity::Low,
        Some(_) => Severity::Medium,
    };
    (classification, severity)
}

/// The event sent to the alert sink's URL for one Notification event from target `jenkins`.
pub fn alert_event(jenkins: &str, event: &Event) -> Value {
    let build = &event.build;
    let status = build.status.as_deref();
    let (classification, severity) = classify(build.phase, status);
    let job = event.job_name();
    let number = build.number;
    let phase = build.phase.as_str();
    let title = match status {
        Some(result) => format!("{job} #{number} {phase} {result}"),
        None => format!("{job} #{number} {phase}"),
    };
    let happened = match (build.phase, status) {
        (Phase::Queued, _) => "is queued".to_owned(),
        (Phase::Started, _) => "started".to_owned(),
        (Phase::Completed, Some(result)) => format!("completed {result}"),
        (Phase::Completed, None) => "completed".to_owned(),
        (Phase::Finalized, Some(result)) => format!("finished {result}"),
        (Phase::Finalized, None) => "finished".to_owned(),
        (Phase::None, Some(result)) => format!("sent a notification (result so far {result})"),
        (Phase::None, None) => "sent a notification".to_owned(),
    };
    let mut document = Map::new();
    document.insert("id".into(), json!(format!("{jenkins}:{}", event.url)));
    document.insert("title".into(), json!(title));
    document.insert("status".into(), json!(classification.as_str()));
    document.insert("severity".into(), json!(severity.as_str()));
    document.insert(
        "message".into(),
        json!(format!("Jenkins build {job} #{number} {happened}.")),
    );
    document.insert("source".into(), json!("jenkins"));
    if let Some(full_url) = &build.full_url {
        document.insert("url".into(), json!(full_url));
    }
    document.insert("job".into(), json!(event.url));
    document.insert("build".into(), json!(number));
    document.insert("phase".into(), json!(phase));
    if let Some(result) = status {
        document.insert("result".into(), json!(result));
    }
    Value::Object(document)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Classification, Severity, alert_event, classify};
    use crate::events::model::Phase;
    use crate::events::model::tests::{COMPLETED_128, FINALIZED_129, QUEUED_128, parse};

    use Classification::{Alert, Resolve};
    use Severity::{High, Low, Medium};

    #[track_caller]
    fn check(phase: Phase, status: Option<&str>, expected: (Classification, Severity)) {
        assert_eq!(classify(phase, status), expected, "{phase} {status:?}");
    }

    /// Every phase × every Jenkins result (and none): vendor/itoc360-jenkins-integration.txt
    /// "How It Works", with PRODUCT.md's priorities for NOT_BUILT and for no result.
    #[test]
    fn every_phase_and_result_is_classified_as_itoc360_does() {
        let table = [
            (Phase::Queued, Some("SUCCESS"), (Alert, Low)),
            (Phase::Queued, Some("UNSTABLE"), (Alert, Medium)),
            (Phase::Queued, Some("FAILURE"), (Alert, High)),
            (Phase::Queued, Some("NOT_BUILT"), (Alert, Medium)),
            (Phase::Queued, Some("ABORTED"), (Alert, Medium)),
            (Phase::Queued, None, (Alert, Low)),
            (Phase::Started, Some("SUCCESS"), (Alert, Low)),
            (Phase::Started, Some("UNSTABLE"), (Alert, Medium)),
            (Phase::Started, Some("FAILURE"), (Alert, High)),
            (Phase::Started, Some("NOT_BUILT"), (Alert, Medium)),
            (Phase::Started, Some("ABORTED"), (Alert, Medium)),
            (Phase::Started, None, (Alert, Low)),
            (Phase::Completed, Some("SUCCESS"), (Alert, Low)),
            (Phase::Completed, Some("UNSTABLE"), (Alert, Medium)),
            (Phase::Completed, Some("FAILURE"), (Alert, High)),
            (Phase::Completed, Some("NOT_BUILT"), (Alert, Medium)),
            (Phase::Completed, Some("ABORTED"), (Alert, Medium)),
            (Phase::Completed, None, (Alert, Low)),
            (Phase::Finalized, Some("SUCCESS"), (Resolve, Low)),
            (Phase::Finalized, Some("UNSTABLE"), (Alert, Medium)),
            (Phase::Finalized, Some("FAILURE"), (Alert, High)),
            (Phase::Finalized, Some("NOT_BUILT"), (Alert, Medium)),
            (Phase::Finalized, Some("ABORTED"), (Alert, Medium)),
            (Phase::Finalized, None, (Alert, Low)),
            (Phase::None, Some("SUCCESS"), (Alert, Low)),
            (Phase::None, Some("UNSTABLE"), (Alert, Medium)),
            (Phase::None, Some("FAILURE"), (Alert, High)),
            (Phase::None, Some("NOT_BUILT"), (Alert, Medium)),
            (Phase::None, Some("ABORTED"), (Alert, Medium)),
            (Phase::None, None, (Alert, Low)),
        ];
        assert_eq!(table.len(), 30);
        for (phase, status, expected) in table {
            check(phase, status, expected);
        }
    }

    #[test]
    fn results_are_matched_exactly() {
        check(Phase::Finalized, Some("success"), (Alert, Medium));
        check(Phase::Finalized, Some("FAILED"), (Alert, Medium));
    }

    #[test]
    fn the_failed_finalized_example_raises_a_high_alert_for_its_job() {
        // jenkins-events.md §1.6, FINALIZED, failed run.
        assert_eq!(
            alert_event("main", &parse(FINALIZED_129)),
            json!({
                "id": "main:job/payments-deploy/",
                "title": "payments-deploy #129 FINALIZED FAILURE",
                "status": "trigger",
                "severity": "high",
                "message": "Jenkins build payments-deploy #129 finished FAILURE.",
                "source": "jenkins",
                "url": "https://jenkins.example.com/job/payments-deploy/129/",
                "job": "job/payments-deploy/",
                "build": 129,
                "phase": "FINALIZED",
                "result": "FAILURE",
            })
        );
    }

    #[test]
    fn a_successful_finalized_build_resolves_the_same_id() {
        let failed = alert_event("main", &parse(FINALIZED_129));
        let succeeded = parse(
            &FINALIZED_129
                .replace("\"FAILURE\"", "\"SUCCESS\"")
                .replace("129", "130"),
        );
        let resolve = alert_event("main", &succeeded);
        assert_eq!(resolve["id"], failed["id"]);
        assert_eq!(resolve["status"], "resolve");
        assert_eq!(resolve["severity"], "low");
        assert_eq!(
            resolve["message"],
            "Jenkins build payments-deploy #130 finished SUCCESS."
        );
    }

    #[test]
    fn early_phases_have_no_result_and_say_what_happened() {
        // jenkins-events.md §1.6, QUEUED: no status yet.
        let queued = alert_event("main", &parse(QUEUED_128));
        assert_eq!(queued["title"], "payments-deploy #128 QUEUED");
        assert_eq!(
            queued["message"],
            "Jenkins build payments-deploy #128 is queued."
        );
        assert_eq!(queued["severity"], "low");
        assert!(queued.get("result").is_none());
        let completed = alert_event("main", &parse(COMPLETED_128));
        assert_eq!(completed["title"], "payments-deploy #128 COMPLETED SUCCESS");
        assert_eq!(
            completed["message"],
            "Jenkins build payments-deploy #128 completed SUCCESS."
        );
        assert_eq!(completed["status"], "trigger");
    }

    #[track_caller]
    fn check_message(phase: &str, status: Option<&str>, expected: &str) {
        let mut build = json!({"number": 7, "phase": phase});
        if let Some(status) = status {
            build["status"] = json!(status);
        }
        let body = json!({"url": "job/team/job/payments/", "build": build}).to_string();
        let event = alert_event("ci", &parse(&body));
        assert_eq!(event["message"], expected, "{phase} {status:?}");
    }

    #[test]
    fn messages_name_the_folder_path_and_the_phase() {
        check_message("QUEUED", None, "Jenkins build team/payments #7 is queued.");
        check_message("STARTED", None, "Jenkins build team/payments #7 started.");
        check_message(
            "COMPLETED",
            Some("UNSTABLE"),
            "Jenkins build team/payments #7 completed UNSTABLE.",
        );
        check_message(
            "COMPLETED",
            None,
            "Jenkins build team/payments #7 completed.",
        );
        check_message(
            "FINALIZED",
            Some("ABORTED"),
            "Jenkins build team/payments #7 finished ABORTED.",
        );
        check_message(
            "FINALIZED",
            None,
            "Jenkins build team/payments #7 finished.",
        );
        check_message(
            "NONE",
            Some("FAILURE"),
            "Jenkins build team/payments #7 sent a notification (result so far FAILURE).",
        );
        check_message(
            "NONE",
            None,
            "Jenkins build team/payments #7 sent a notification.",
        );
    }

    #[test]
    fn a_build_without_a_root_url_has_no_url_key() {
        let body = r#"{"url":"job/team/job/payments/","build":{"number":3,"phase":"STARTED"}}"#;
        let event = alert_event("ci", &parse(body));
        assert_eq!(
            event,
            json!({
                "id": "ci:job/team/job/payments/",
                "title": "team/payments #3 STARTED",
                "status": "trigger",
                "severity": "low",
                "message": "Jenkins build team/payments #3 started.",
                "source": "jenkins",
                "job": "job/team/job/payments/",
                "build": 3,
                "phase": "STARTED",
            })
        );
        let keys: Vec<&String> = event
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "id", "title", "status", "severity", "message", "source", "job", "build", "phase"
            ]
        );
    }
}
