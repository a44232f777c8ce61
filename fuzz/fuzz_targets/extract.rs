//! Fuzz target `extract`: JSONPath body variables (GWT flattening, filters, defaults) on fuzzed JSON and paths.
//! The property lives in fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::extract(data));
