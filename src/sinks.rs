//! Targets of the outbox: Jenkins (triggers) and the sinks build events go to
//! (PRODUCT.md "Build events out of Jenkins"). Each is built from config and implements
//! [`crate::outbox::Target`]; what a sink sends is built by a pure function of the event and
//! the build's facts (`allstacks`, `alert`), so `hookgate test-event` prints what is sent.

pub mod alert;
pub mod allstacks;
pub mod http;
pub mod jenkins;
pub mod port;
pub mod repo;
pub mod sink;
