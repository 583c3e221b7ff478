//! The balancer's parser of front-ends' answer heads (its inline HTTP/1.1 client).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    livecast_proxy::fuzzing::answer_head(data);
});
