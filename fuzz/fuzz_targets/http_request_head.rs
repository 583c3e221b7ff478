//! The balancer's plain HTTP/1.1 loop reading a viewer's request head and writing the head it
//! sends the front-end.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livecast_proxy::fuzzing::RequestHeads;

static HEADS: OnceLock<RequestHeads> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HEADS.get_or_init(RequestHeads::default).plan(data);
});
