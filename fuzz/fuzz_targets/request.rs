//! Fuzz target `request`: Whole requests as raw bytes over a real socket to an in-process gateway.
//! The property lives in fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::request(data));
