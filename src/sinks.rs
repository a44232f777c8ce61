//! Sinks: what hookgate builds out of a Jenkins build event for each system it relays to
//! (PRODUCT.md "Build events out of Jenkins"). The builders here are pure; delivering what they
//! build is the outbox's job.

pub mod alert;
pub mod allstacks;
pub mod repo;
