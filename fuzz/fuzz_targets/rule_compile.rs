//! Fuzz target `rule_compile`: Rule compilation from TOML/YAML/JSON text: errors are fine, panics are not.
//! The property lives in fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::rule_compile(data));
