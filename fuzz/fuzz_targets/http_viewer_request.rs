//! The front-end's reading of a viewer's request: LL-HLS delivery directives, the Range
//! header, and the blocking-reload decision and delta update over a playlist. The input is
//! the query string, a newline, the Range value, a newline, then the playlist text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let query = parts.next().unwrap_or_default();
    let range = parts.next().unwrap_or_default();
    let playlist = parts.next().unwrap_or_default();
    livecast_web::fuzzing::request(query, range, playlist);
});
