//! Targets of the outbox other than the store: Jenkins (triggers) and the sinks build events go
//! to. Each is built from config and implements [`crate::outbox::Target`].

pub mod http;
pub mod jenkins;
