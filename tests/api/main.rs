//! hookgate's integration tests: one binary, real HTTP on port 0, an in-process fake Jenkins.

mod abuse;
mod admin;
mod allowlist;
mod answers;
mod binary;
mod corpus;
mod crash;
mod dashboards;
mod dispatch;
mod events;
mod gwt;
mod helpers;
mod import_gwt;
mod invoke;
mod port;
mod port_runs;
mod queue;
mod reload;
mod security;
mod signatures;
mod systemd;
mod tls;
