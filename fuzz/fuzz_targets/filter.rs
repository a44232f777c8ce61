//! Fuzz target `filter`: Filter text rendering and regex evaluation with fuzzed text, expression and variables.
//! The property lives in fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::filter(data));
