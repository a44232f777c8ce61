//! The command line: `serve`, `check`, `test`, `sign`, `test-event` and `deliveries`, each
//! taking `--config`.

/// `println!` that ignores a closed stdout (`hookgate check | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod deliveries;
mod events;
mod import_gwt;
mod offline;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, DeliveryMode, ProcessEnv, Settings, Source};
use crate::gateway::Gateway;
use crate::startup::Application;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A security-hardened webhook gateway in front of Jenkins' Generic Webhook Trigger"
)]
struct Cli {
    /// Config file (default: $HOOKGATE_CONFIG, else ./hookgate.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Load and compile the config and every rule; print one line per rule; exit 1 listing
    /// every problem.
    Check,
    /// Dry-run one rule on a payload: print the resolved variables, the filter and what would
    /// be sent to Jenkins. Never dispatches, and skips verification. Exits 0 when the rule
    /// would dispatch, 2 when its filter does not match, 1 on errors.
    Test {
        /// Rule name.
        rule: String,
        /// File holding the request body.
        payload: PathBuf,
        /// A request header, `'Name: value'`; repeatable.
        #[arg(long = "header", value_name = "'K: V'")]
        headers: Vec<String>,
        /// A query parameter, `name=value`; repeatable.
        #[arg(long = "query", value_name = "K=V")]
        query: Vec<String>,
        /// Print one JSON object (resolvedVariables, regexpFilterText, triggered, wouldSend …)
        /// instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the headers (and a curl line) that make a validly signed request for a rule,
    /// reading the secret as the rule does.
    Sign {
        /// Rule name.
        #[arg(long)]
        rule: String,
        /// File holding the request body.
        payload: PathBuf,
    },
    /// Dry-run one Notification event: for every sink, whether it matches (and if not, why)
    /// and the exact request it would send, credentials masked. Never sends. Exits 0 when some
    /// sink would send, 2 when none would, 1 on errors.
    TestEvent {
        /// File holding the event as the Notification plugin posts it (JSON format).
        event: PathBuf,
        /// The Jenkins target the event comes from (default: the only one configured).
        #[arg(long, value_name = "NAME")]
        jenkins: Option<String>,
    },
    /// Print a rule for a Jenkins job's Generic Webhook Trigger, read from its config.xml (what
    /// `GET /job/<name>/config.xml` returns). The token becomes a `token_env` placeholder; what a
    /// rule cannot express becomes a comment and a warning on stderr.
    ImportGwt {
        /// The job's config.xml.
        config_xml: PathBuf,
        /// The rule's name (default: the job's directory, else the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Inspect and manage the delivery queue (queue mode), also while the gateway runs.
    Deliveries {
        #[command(subcommand)]
        command: deliveries::DeliveriesCommand,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Reads a file and prints a rule: it needs no config.
    if let Command::ImportGwt { config_xml, name } = &cli.command {
        return import_gwt::run(config_xml, name.as_deref());
    }
    let env = ProcessEnv;
    let source = config::locate(cli.config.as_deref(), &env);
    let settings = match config::load(&source, &env) {
        Ok(settings) => settings,
        Err(problems) => return report_problems(&problems),
    };
    match cli.command {
        Command::Serve => serve(settings, source),
        Command::Check => check(settings, source),
        Command::Test {
            rule,
            payload,
            headers,
            query,
            json,
        } => with_gateway(settings, source, |gateway| {
            offline::test(gateway, &rule, &payload, &headers, &query, json)
        }),
        Command::Sign { rule, payload } => with_gateway(settings, source, |gateway| {
            offline::sign(gateway, &rule, &payload)
        }),
        Command::TestEvent { event, jenkins } => with_gateway(settings, source, |gateway| {
            events::test_event(gateway, &event, jenkins.as_deref())
        }),
        Command::Deliveries { command } => deliveries::run(&settings, command),
        Command::ImportGwt { config_xml, name } => import_gwt::run(&config_xml, name.as_deref()),
    }
}

fn report_problems(problems: &config::Problems) -> ExitCode {
    let n = problems.0.len();
    eprintln!(
        "hookgate: {n} problem{} found:",
        if n == 1 { "" } else { "s" }
    );
    for problem in &problems.0 {
        eprintln!("  error: {problem}");
    }
    ExitCode::FAILURE
}

fn with_gateway(
    settings: Settings,
    source: Source,
    run: impl FnOnce(&Gateway) -> Result<ExitCode, String>,
) -> ExitCode {
    let gateway = match Gateway::compile(settings, source, &ProcessEnv) {
        Ok(gateway) => gateway,
        Err(problems) => return report_problems(&problems),
    };
    match run(&gateway) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("hookgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings, source: Source) -> ExitCode {
    if let Err(error) = telemetry::init(&settings.log) {
        eprintln!("hookgate: {error:#}");
        return ExitCode::FAILURE;
    }
    let gateway = match Gateway::compile(settings, source, &ProcessEnv) {
        Ok(gateway) => gateway,
        Err(problems) => {
            for problem in &problems.0 {
                tracing::error!(%problem, "Configuration problem.");
            }
            return report_problems(&problems);
        }
    };
    for warning in gateway.warnings() {
        tracing::warn!(%warning, "Unsafe configuration.");
    }
    let config = gateway.source.to_string();
    let rules = gateway.rules.len();
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(gateway)?;
        tracing::info!(
            listen = %app.local_addr(),
            admin = %app.admin_addr(),
            config,
            rules,
            version = env!("CARGO_PKG_VERSION"),
            "hookgate is listening."
        );
        // The handlers are in place before READY=1: a reload sent at once must not meet
        // SIGHUP's default action, which ends the process.
        use actix_web::rt::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let hangup = signal(SignalKind::hangup());
        crate::systemd::ready();
        // actix stops on the same signals; this only tells systemd the shutdown has begun.
        actix_web::rt::spawn(async move {
            let Ok(mut terminate) = terminate else {
                return;
            };
            tokio::select! {
                _ = terminate.recv() => {}
                _ = actix_web::rt::signal::ctrl_c() => {}
            }
            crate::systemd::stopping();
        });
        // SIGHUP (the unit's ExecReload) reloads the config, the rules, the sinks and the TLS
        // certificate; the reloader logs the outcome.
        let reloader = app.reloader();
        actix_web::rt::spawn(async move {
            let Ok(mut hangup) = hangup else {
                return;
            };
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading.");
                let _ = reloader.reload(crate::reload::Trigger::Signal).await;
            }
        });
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => {
            tracing::info!("hookgate stopped.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "hookgate failed.");
            eprintln!("hookgate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn check(settings: Settings, source: Source) -> ExitCode {
    let gateway = match Gateway::compile(settings, source, &ProcessEnv) {
        Ok(gateway) => gateway,
        Err(problems) => return report_problems(&problems),
    };
    out!(
        "config: {} (listen {}, {} Jenkins target{}, rules from {}, delivery {})",
        gateway.source,
        gateway.listen,
        gateway.settings.jenkins.len(),
        if gateway.settings.jenkins.len() == 1 {
            ""
        } else {
            "s"
        },
        gateway.settings.rules.dir.display(),
        match gateway.settings.delivery.mode {
            DeliveryMode::Queue =>
                format!("queue in {}", gateway.settings.delivery.store.display()),
            DeliveryMode::Direct => "direct".to_owned(),
        }
    );
    out!(
        "admin: listen {} (/metrics, /deliveries/{{id}}, /readyz; {})",
        gateway.admin_listen,
        if gateway.admin_token.is_some() {
            "bearer token required"
        } else {
            "no token"
        }
    );
    for rule in gateway.rules.iter() {
        out!("{}", offline::summary(rule));
    }
    let mut sources: Vec<&str> = gateway
        .event_sources
        .iter()
        .map(|source| source.name.as_str())
        .collect();
    sources.sort_unstable();
    for source in sources {
        out!("  events  jenkins.{source} at /jenkins/{source}/events");
    }
    for sink in gateway.sinks.iter() {
        out!("{}", sink.summary());
    }
    for warning in gateway.warnings() {
        out!("  warning: {warning}");
    }
    out!(
        "ok: {} rule{} compiled",
        gateway.rules.len(),
        if gateway.rules.len() == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}

/// Shell-quotes `text` for the printed curl line.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn read_payload(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
