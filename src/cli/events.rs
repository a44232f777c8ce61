//! `hookgate test-event`: what every sink would do with one Notification event, without
//! sending anything ("why didn't Allstacks get this build?").

use std::path::Path;
use std::process::ExitCode;

use super::read_payload;
use crate::events::facts::BuildFacts;
use crate::events::model::Event;
use crate::gateway::Gateway;

/// The Jenkins target the event is read as coming from: the one named, else the only one.
fn pick_jenkins<'g>(gateway: &'g Gateway, named: Option<&str>) -> Result<&'g str, String> {
    let names: Vec<&String> = gateway.settings.jenkins.keys().collect();
    match named {
        Some(name) => names
            .iter()
            .find(|n| n.as_str() == name)
            .map(|n| n.as_str())
            .ok_or_else(|| {
                format!(
                    "no Jenkins target `{name}`; configured: {}",
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        None if names.len() == 1 => Ok(names[0].as_str()),
        None => Err(format!(
            "the config has {} Jenkins targets: name the one the event comes from with --jenkins",
            names.len()
        )),
    }
}

pub fn test_event(
    gateway: &Gateway,
    event_file: &Path,
    jenkins: Option<&str>,
) -> Result<ExitCode, String> {
    let body = read_payload(event_file)?;
    let jenkins = pick_jenkins(gateway, jenkins)?;
    let public_url = gateway
        .settings
        .jenkins
        .get(jenkins)
        .map(|target| {
            target
                .public_url
                .clone()
                .unwrap_or_else(|| target.url.clone())
        })
        .unwrap_or_default();
    let event = Event::parse(&body).map_err(|reason| {
        format!(
            "{}: the endpoint would answer 400: {reason}",
            event_file.display()
        )
    })?;
    let mut facts = BuildFacts::default();
    facts.absorb(&event);
    out!(
        "event: {} #{} {}{} from jenkins {jenkins} (build {})",
        event.job_name(),
        event.build.number,
        event.build.phase,
        event
            .build
            .status
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        event.build_key()
    );
    if gateway.event_sources.get(jenkins).is_none() {
        out!(
            "  note: jenkins.{jenkins} has no events token, so the gateway refuses its events (404)"
        );
    }
    out!(
        "  note: read alone; when serving, hookgate also uses what this build's earlier events said (STARTED's start time, scm, parameters)"
    );
    if gateway.sinks.is_empty() {
        out!("no sinks configured ([sinks.<name>] in the config)");
        return Ok(ExitCode::from(2));
    }
    let mut sends = 0;
    for sink in gateway.sinks.iter() {
        if let Err(why) = sink.matcher.check(jenkins, &event) {
            out!("sink {}: skipped: {why}", sink.name);
            continue;
        }
        if let Some(port) = sink.port() {
            sends += 1;
            let preview = crate::sinks::port::preview(&event, &port.run_id_parameters, &public_url);
            out!("sink {}: matches; the run: {}", sink.name, preview.run);
            match preview.update {
                Some(update) => {
                    out!("  would send: PATCH {}/v1/actions/runs/<run>", sink.url());
                    out!(
                        "  Authorization: Bearer [an access token from POST /v1/auth/access_token]"
                    );
                    out!("");
                    out!("  {update}");
                    if port.logs {
                        out!(
                            "  and POST {}/v1/actions/runs/<run>/logs {}",
                            sink.url(),
                            crate::sinks::port::log_line(&update)
                        );
                    }
                }
                None => out!(
                    "  would send nothing for {}: Port hears of the queue item when Jenkins accepts the trigger, and of the result at FINALIZED",
                    event.build.phase
                ),
            }
            continue;
        }
        match sink.prepare(jenkins, &body, &event, &facts) {
            Ok(prepared) => {
                sends += 1;
                let once = if sink.once_per_build() {
                    " (one record per build: unless an earlier phase of this build sent it)"
                } else {
                    ""
                };
                out!("sink {}: matches; would send{once}:", sink.name);
                out!("  POST {}", prepared.shown_url);
                for (name, value) in prepared.shown_headers() {
                    out!("  {name}: {value}");
                }
                // The body exactly as sent (pipe it to `jq` to read it laid out).
                out!("");
                out!("  {}", String::from_utf8_lossy(&prepared.body));
            }
            Err(reason) => {
                out!(
                    "sink {}: matches, but would be dead-lettered: {reason}",
                    sink.name
                );
            }
        }
    }
    Ok(if sends > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
