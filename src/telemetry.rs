//! Logging setup: `tracing` to stderr, as text or JSON, filtered by `log.level`.
//!
//! Nothing on the request path logs bodies, query strings, header values, tokens, secrets or
//! MACs; request lines carry the request id, method, path, status and client address only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Fails if `log.level` is not a valid filter or a subscriber
/// is already installed.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    // Colour codes only for a person at a terminal; files and log shippers get plain text.
    install(settings, std::io::stderr, std::io::stderr().is_terminal())
}

/// Installs the global subscriber writing plain text or JSON to `writer` (tests capture
/// output this way).
pub fn init_with_writer<W>(settings: &LogSettings, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(settings, writer, false)
}

fn install<W>(settings: &LogSettings, writer: W, ansi: bool) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.level).map_err(|e| {
        anyhow::anyhow!("log.level `{}` is not a valid filter: {e}", settings.level)
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false);
    let result = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
