//! The shipped Grafana dashboard and Prometheus alerts name only metrics hookgate exports: a
//! renamed metric fails here, not on an operator's empty panel.

use std::collections::BTreeSet;

use crate::helpers::{AppOptions, PORT_BODY, spawn_app_with};

/// Every `hookgate_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hookgate_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The PromQL of every panel's targets.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| exprs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[actix_web::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let app = spawn_app_with(AppOptions {
        queue: true,
        events_token: true,
        sinks: "[sinks.relay]\nkind = \"forward\"\nurl = \"{sinks}/forward/x\"\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    // Families without a sample are not exported: give each one (a call, an event, their
    // deliveries to Jenkins and to the sink).
    assert!(app.post_port(PORT_BODY).await.status().is_success());
    let event = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/payloads/jenkins-freestyle-started.json"
    ))
    .expect("event");
    assert!(app.post_event(&event).await.status().is_success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let metrics = app.metrics().await;
        if metrics.contains("hookgate_sink_deliveries_total{")
            && metrics.contains("hookgate_jenkins_calls_total{")
        {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // A name must be a series of its family's type: `_total` of a counter, `_bucket`, `_sum`
    // or `_count` of a histogram, the bare name of a gauge.
    let exported = |name: &str| {
        let is = |family: &str, kind: &str| metrics.contains(&format!("# TYPE {family} {kind}\n"));
        if let Some(family) = name.strip_suffix("_total") {
            return is(family, "counter");
        }
        if let Some(family) = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            && is(family, "histogram")
        {
            return true;
        }
        is(name, "gauge")
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/examples/grafana/hookgate.json"))
            .expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    // The instance variable's query too.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");
    let alerts =
        std::fs::read_to_string(format!("{root}/examples/prometheus/alerts.yml")).expect("alerts");
    let named: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| metric_names(q))
        .chain(metric_names(&alerts))
        .collect();
    assert!(named.len() >= 12, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|name| !exported(name)).collect();
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:?}\n{metrics}"
    );
    // The alerts the issue names are there.
    for alert in [
        "HookgateDeadLettersRising",
        "HookgateOldestPendingTooOld",
        "HookgateSinkCredentialsRefused",
        "HookgateNotReady",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}")), "{alert}");
    }
    // And the check itself can fail: a name hookgate does not export, or a suffix its family's
    // type does not have, is caught.
    assert!(!exported("hookgate_no_such_metric_total"));
    assert!(!exported("hookgate_queue_deliveries_total"));
    assert!(!exported("hookgate_requests_bucket"));
    assert!(exported("hookgate_requests_total") && exported("hookgate_queue_deliveries"));
}
