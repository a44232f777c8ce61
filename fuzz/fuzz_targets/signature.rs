//! Fuzz target `signature`: Signature verification for every scheme: fuzzed headers and body; sign/verify agree.
//! The property lives in fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::signature(data));
