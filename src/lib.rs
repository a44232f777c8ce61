//! hookgate: a security-hardened webhook gateway in front of Jenkins' Generic Webhook Trigger.
//!
//! Modules follow a request's path: `config` and `rules` are compiled at start-up into a
//! `gateway`; `server` receives a call, `verify` checks it, `pipeline` applies the rule (`extract`,
//! then `filter`), `dispatch` hands it to Jenkins, through the durable `store` in queue mode. See ARCHITECTURE.md.

pub mod cli;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod extract;
pub mod filter;
pub mod gateway;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod reload;
pub mod rules;
pub mod secret;
pub mod server;
pub mod sinks;
pub mod startup;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod verify;
