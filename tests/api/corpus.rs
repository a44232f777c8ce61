//! Replays the fuzz corpora (`fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`) through
//! the fuzz targets' own properties, so plain `cargo test` guards every fixed crash without
//! libFuzzer or a nightly toolchain.

// Shared with fuzz/fuzz_targets/*.rs; only uses crates the main crate already depends on.
#[path = "../../fuzz/props.rs"]
mod props;

use std::path::PathBuf;

/// Every corpus file of `target`, seeds then regressions, skipping dotfiles (`.gitkeep`).
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|entry| entry.expect("read corpus dir").path())
            .filter(|path| {
                path.is_file()
                    && !path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("read corpus file");
            files.push((path, data));
        }
    }
    files
}

/// Runs `property` on every file of `target`'s corpus; a panic names the file.
fn replay(target: &str, property: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no seeds for fuzz target {target}");
    for (path, data) in files {
        let outcome = std::panic::catch_unwind(|| property(&data));
        if let Err(panic) = outcome {
            eprintln!("fuzz target {target} fails on {}", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn corpus_signature() {
    replay("signature", props::signature);
}

#[test]
fn corpus_rule_compile() {
    replay("rule_compile", props::rule_compile);
}

#[test]
fn corpus_extract() {
    replay("extract", props::extract);
}

#[test]
fn corpus_lenient_json() {
    replay("lenient_json", props::lenient_json);
}

#[test]
fn corpus_notification_event() {
    replay("notification_event", props::notification_event);
}

#[test]
fn corpus_filter() {
    replay("filter", props::filter);
}

/// Real sockets to an in-process gateway; every input is bounded by 2 s socket timeouts, and
/// the seeds are a dozen small requests, so this stays within a few seconds.
#[test]
fn corpus_request() {
    replay("request", props::request);
    props::request_alive();
}
