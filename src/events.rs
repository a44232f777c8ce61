//! Build events out of Jenkins: the Notification plugin's JSON event (`model`) and what the
//! earlier phases of a build told us about it (`facts`). Both are pure data, parsed and folded
//! without I/O, so the endpoint and the sink deliveries share one reading of a payload
//! (reference `jenkins-events.md` §1.5–1.6).

pub mod facts;
pub mod model;
