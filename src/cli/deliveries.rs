//! `hookgate deliveries …`: the operator's view of the queue. Each command opens the store on
//! its own connection, so it works beside a running gateway.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;

use crate::config::Settings;
use crate::store::{Admin, DeliveryView, ListFilter, State, StoreError, target_id};

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        #[arg(long, value_enum)]
        state: Option<State>,
        /// Only deliveries of calls that came through this rule.
        #[arg(long, conflicts_with = "sink")]
        rule: Option<String>,
        /// Only deliveries to this sink (`[sinks.<name>]`).
        #[arg(long)]
        sink: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one delivery with every attempt (statuses and errors; never secrets or the body).
    Show { id: String },
    /// Put a dead (or retrying) delivery back in the queue now, with a fresh attempt budget.
    Retry {
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<String>,
        /// Requeue every dead delivery (but those a later event of the same build has overtaken).
        #[arg(long)]
        dead: bool,
        /// Requeue it even though a later event of the same build was delivered to the sink
        /// already (it will arrive out of order).
        #[arg(long, requires = "id")]
        force: bool,
    },
    /// Delete delivered calls older than a duration (`7d`, `12h`).
    Purge {
        /// Only delivered (`done`) calls are ever purged; the flag says so explicitly.
        #[arg(long, required = true)]
        done: bool,
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        older_than: Duration,
    },
}

pub fn run(settings: &Settings, command: DeliveriesCommand) -> ExitCode {
    match execute(settings, command) {
        Ok(code) => code,
        Err(error) => {
            let cause = std::error::Error::source(&error)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            eprintln!(
                "hookgate: delivery store {}: {error}{cause}",
                settings.delivery.store.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn execute(settings: &Settings, command: DeliveriesCommand) -> Result<ExitCode, StoreError> {
    let mut admin = Admin::open(&settings.delivery.store)?;
    match command {
        DeliveriesCommand::List {
            state,
            rule,
            sink,
            limit,
        } => {
            let target = sink.as_deref().map(|sink| target_id("sink", sink));
            let filter = ListFilter {
                state,
                rule: rule.as_deref(),
                target: target.as_deref(),
            };
            let rows = admin.list(filter, limit)?;
            if rows.is_empty() {
                out!("no deliveries");
            }
            for row in rows {
                // A trigger is shown by its rule, a sink delivery by its sink and event.
                let what = match (&row.rule, &row.event) {
                    (Some(rule), _) => format!("{rule} -> {}", row.target),
                    (None, Some(event)) => format!("{} <- {event}", row.target),
                    (None, None) => row.target.clone(),
                };
                let what = printable(&what);
                out!(
                    "{}  {:<8}  {:<24}  attempts={:<3} accepted={}{}",
                    row.id,
                    row.state.as_str(),
                    what,
                    row.attempts,
                    time(row.accepted_at),
                    row.last_error
                        .map(|e| format!("  last_error={}", printable(&e)))
                        .unwrap_or_default()
                );
            }
        }
        DeliveriesCommand::Show { id } => match admin.get(&id)? {
            Some(view) => print_view(&view),
            None => {
                eprintln!("hookgate: no delivery {id}");
                return Ok(ExitCode::FAILURE);
            }
        },
        DeliveriesCommand::Retry {
            id: Some(id),
            force,
            ..
        } => {
            admin.retry(&id, force)?;
            out!("{id} requeued");
        }
        DeliveriesCommand::Retry { id: None, .. } => {
            let done = admin.retry_dead()?;
            let n = done.requeued;
            out!(
                "{n} dead deliver{} requeued",
                if n == 1 { "y" } else { "ies" }
            );
            if done.superseded > 0 {
                out!(
                    "{} left dead: a later event of the same build (or job) was already delivered to their sink; retry one by id with --force to send it anyway",
                    done.superseded
                );
            }
        }
        DeliveriesCommand::Purge { older_than, .. } => {
            let n = admin.purge_done(older_than)?;
            out!(
                "{n} delivered call{} older than {} purged",
                if n == 1 { "" } else { "s" },
                humantime::format_duration(older_than)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The view with every text from outside (events, answers) made printable.
fn printable_view(view: &DeliveryView) -> DeliveryView {
    let mut view = view.clone();
    view.rule = view.rule.as_deref().map(printable);
    view.request_id = view.request_id.as_deref().map(printable);
    view.last_error = view.last_error.as_deref().map(printable);
    if let Some(event) = &mut view.event {
        event.build = printable(&event.build);
        event.phase = printable(&event.phase);
    }
    for attempt in &mut view.attempts {
        attempt.error = attempt.error.as_deref().map(printable);
    }
    view
}

/// `text` with control characters escaped: a build url comes from an event and an error from a
/// sink's answer, and neither may forge a line of the listing or drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn print_view(view: &DeliveryView) {
    let view = &printable_view(view);
    out!("delivery:    {}", view.id);
    match (&view.rule, &view.event) {
        (Some(rule), _) => out!("rule:        {rule} -> {}", view.target),
        (None, Some(event)) => {
            out!("target:      {}", view.target);
            out!(
                "event:       {} ({} {} from jenkins {})",
                event.id,
                event.build,
                event.phase,
                event.jenkins
            );
        }
        (None, None) => out!("target:      {}", view.target),
    }
    out!("state:       {}", view.state.as_str());
    out!("accepted:    {}", time(view.accepted_at));
    if let Some(request_id) = &view.request_id {
        out!("request id:  {request_id}");
    }
    if let Some(next) = view.next_attempt_at {
        out!("next try:    {}", time(next));
    }
    if let Some(finished) = view.finished_at {
        out!("finished:    {}", time(finished));
    }
    if let Some(receipt) = &view.receipt {
        let items = receipt["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for item in items {
            out!(
                "jenkins:     queue item {} ({})",
                item["id"],
                printable(item["url"].as_str().unwrap_or(""))
            );
        }
        if items.is_empty() {
            out!("receipt:     {receipt}");
        }
    }
    if let Some(error) = &view.last_error {
        out!("last error:  {error}");
    }
    out!("body:        {} bytes", view.body_bytes);
    out!("attempts:    {}", view.attempts.len());
    for attempt in &view.attempts {
        out!(
            "  #{:<3} {}  {:>6} ms  status={}  {}",
            attempt.n,
            time(attempt.at),
            attempt.duration_ms,
            attempt
                .status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            attempt.error.as_deref().unwrap_or("")
        );
    }
}
