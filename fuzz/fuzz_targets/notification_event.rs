//! Fuzz target `notification_event`: bodies for `POST /jenkins/{target}/events`, read as the
//! Notification plugin's event and turned into what each sink sends. The property lives in
//! fuzz/props.rs, shared with the replay test tests/api/corpus.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::notification_event(data));
