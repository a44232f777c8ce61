//! What the earlier phases of a build told us: QUEUED and STARTED carry the queue and start
//! times, and a freestyle build's Git facts may come in any phase (`jenkins-events.md` §1.3,
//! §1.5, §5.1 step 3). The outbox stores one `BuildFacts` per build as JSON, so the field names
//! are part of the stored format.

use serde::{Deserialize, Serialize};

use crate::events::model::{Event, Phase};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildFacts {
    /// The QUEUED event's `build.timestamp` (about when the item was queued); the plugin sends 0
    /// when there was no executor, which is not kept.
    pub queued_at_ms: Option<i64>,
    /// The STARTED event's `build.timestamp` (about when the build started).
    pub started_at_ms: Option<i64>,
    pub queue_id: Option<u64>,
    pub scm_url: Option<String>,
    pub scm_branch: Option<String>,
    pub scm_commit: Option<String>,
    /// In the order first seen.
    pub parameters: Vec<(String, String)>,
    /// The latest lifecycle phase seen; `NONE` (the pipeline step) does not count.
    pub latest_phase: Option<Phase>,
}

impl BuildFacts {
    /// Folds one event in. The first value wins, so a duplicate or a late copy of an earlier
    /// phase never rewrites what is known; later events only fill gaps.
    pub fn absorb(&mut self, event: &Event) {
        let build = &event.build;
        let timestamp = build.timestamp.filter(|ms| *ms > 0);
        match build.phase {
            Phase::Queued => fill(&mut self.queued_at_ms, timestamp),
            Phase::Started => fill(&mut self.started_at_ms, timestamp),
            Phase::Completed | Phase::Finalized | Phase::None => {}
        }
        fill(&mut self.queue_id, build.queue_id);
        fill(&mut self.scm_url, build.scm.url.clone());
        fill(&mut self.scm_branch, build.scm.branch.clone());
        fill(&mut self.scm_commit, build.scm.commit.clone());
        for (name, value) in &build.parameters {
            if !self.parameters.iter().any(|(known, _)| known == name) {
                self.parameters.push((name.clone(), value.clone()));
            }
        }
        if build.phase != Phase::None {
            self.latest_phase = self.latest_phase.max(Some(build.phase));
        }
    }

    /// The first parameter of that name.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::BuildFacts;
    use crate::events::model::Phase;
    use crate::events::model::tests::{COMPLETED_128, QUEUED_128, STARTED_128, parse};

    fn absorbed(bodies: &[&str]) -> BuildFacts {
        let mut facts = BuildFacts::default();
        for body in bodies {
            facts.absorb(&parse(body));
        }
        facts
    }

    #[test]
    fn the_three_phases_of_build_128_give_its_times_scm_and_parameters() {
        // jenkins-events.md §1.6: QUEUED, STARTED, COMPLETED of the same build.
        let facts = absorbed(&[QUEUED_128, STARTED_128, COMPLETED_128]);
        assert_eq!(
            facts,
            BuildFacts {
                queued_at_ms: Some(1768211987655),
                started_at_ms: Some(1768212000000),
                queue_id: Some(5123),
                scm_url: Some("https://github.com/acme/payments-api.git".into()),
                scm_branch: Some("origin/main".into()),
                scm_commit: Some("9fceb02d0ae598e95dc970b74767f19372d61af8".into()),
                parameters: vec![("TARGET_ENV".into(), "production".into())],
                latest_phase: Some(Phase::Completed),
            }
        );
    }

    #[test]
    fn order_of_arrival_does_not_change_the_times_or_the_latest_phase() {
        let forwards = absorbed(&[QUEUED_128, STARTED_128, COMPLETED_128]);
        let backwards = absorbed(&[COMPLETED_128, STARTED_128, QUEUED_128]);
        assert_eq!(forwards, backwards);
        let duplicated = absorbed(&[
            QUEUED_128,
            QUEUED_128,
            STARTED_128,
            STARTED_128,
            COMPLETED_128,
        ]);
        assert_eq!(forwards, duplicated);
    }

    fn event(phase: &str, build: serde_json::Value) -> String {
        let mut build = build;
        build["number"] = json!(1);
        build["phase"] = json!(phase);
        json!({"url": "job/x/", "build": build}).to_string()
    }

    #[test]
    fn the_first_timestamp_of_each_phase_wins_and_zero_is_unknown() {
        let facts = absorbed(&[
            &event("QUEUED", json!({"timestamp": 0})),
            &event("QUEUED", json!({"timestamp": 1000})),
            &event("QUEUED", json!({"timestamp": 2000})),
            &event("STARTED", json!({"timestamp": 3000})),
            &event("STARTED", json!({"timestamp": 4000})),
            &event("COMPLETED", json!({"timestamp": 9000})),
            &event("FINALIZED", json!({"timestamp": 9500})),
        ]);
        assert_eq!(facts.queued_at_ms, Some(1000));
        assert_eq!(facts.started_at_ms, Some(3000));
    }

    #[test]
    fn later_phases_fill_gaps_without_overwriting() {
        let facts = absorbed(&[
            &event(
                "STARTED",
                json!({"scm": {"branch": "origin/main"}, "parameters": {"A": "1"}}),
            ),
            &event(
                "COMPLETED",
                json!({"queue_id": 7, "scm": {"branch": "origin/other", "commit": "abc", "url": "git@h:o/r.git"},
                       "parameters": {"A": "2", "B": ""}}),
            ),
            &event(
                "FINALIZED",
                json!({"queue_id": 8, "scm": {"commit": "def"}, "parameters": {"C": "3"}}),
            ),
        ]);
        assert_eq!(facts.scm_branch.as_deref(), Some("origin/main"));
        assert_eq!(facts.scm_commit.as_deref(), Some("abc"));
        assert_eq!(facts.scm_url.as_deref(), Some("git@h:o/r.git"));
        assert_eq!(facts.queue_id, Some(7));
        assert_eq!(
            facts.parameters,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), String::new()),
                ("C".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(facts.parameter("A"), Some("1"));
        assert_eq!(facts.latest_phase, Some(Phase::Finalized));
    }

    #[test]
    fn the_pipeline_step_phase_does_not_count_as_lifecycle_progress() {
        let facts = absorbed(&[
            &event("STARTED", json!({})),
            &event("NONE", json!({"timestamp": 5})),
        ]);
        assert_eq!(facts.latest_phase, Some(Phase::Started));
        assert_eq!(absorbed(&[&event("NONE", json!({}))]).latest_phase, None);
    }

    #[test]
    fn the_stored_json_keeps_its_field_names_and_reads_back() {
        let facts = absorbed(&[QUEUED_128, STARTED_128, COMPLETED_128]);
        let stored = serde_json::to_value(&facts).unwrap_or_default();
        assert_eq!(
            stored,
            json!({
                "queued_at_ms": 1768211987655_i64,
                "started_at_ms": 1768212000000_i64,
                "queue_id": 5123,
                "scm_url": "https://github.com/acme/payments-api.git",
                "scm_branch": "origin/main",
                "scm_commit": "9fceb02d0ae598e95dc970b74767f19372d61af8",
                "parameters": [["TARGET_ENV", "production"]],
                "latest_phase": "COMPLETED",
            })
        );
        let read: BuildFacts = serde_json::from_value(stored).unwrap_or_default();
        assert_eq!(read, facts);
        // Rows written before a field existed still read.
        let old: BuildFacts = serde_json::from_str(r#"{"started_at_ms": 5}"#).unwrap_or_default();
        assert_eq!(old.started_at_ms, Some(5));
        assert_eq!(old.latest_phase, None);
    }
}
