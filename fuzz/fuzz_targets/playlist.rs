//! The media playlist parser on arbitrary text; what parses renders (also as a delta update),
//! and the rendering parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecast_media::playlist::MediaPlaylist;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(playlist) = MediaPlaylist::parse(text) {
        let _ = playlist.delta().render();
        let text = playlist.render();
        assert!(MediaPlaylist::parse(&text).is_ok(), "{text}");
    }
});
