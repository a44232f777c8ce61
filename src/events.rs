//! Build events out of Jenkins: the Notification plugin's JSON event (`model`), what the earlier
//! phases of a build told us about it (`facts`), where events may come from (`sources`), and
//! accepting one: matched against every sink and stored with its deliveries (`accept`).
//! `model` and `facts` are pure data, parsed and folded without I/O, so the endpoint, the sink
//! deliveries and `hookgate test-event` share one reading of a payload (reference
//! `jenkins-events.md` §1.5–1.6).

pub mod accept;
pub mod facts;
pub mod model;
pub mod sources;
