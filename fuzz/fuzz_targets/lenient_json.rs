//! Fuzz target `lenient_json`: the json-smart permissive parser on fuzzed bodies, against
//! serde_json where both read the body. The property lives in fuzz/props.rs, shared with the
//! replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::lenient_json(data));
