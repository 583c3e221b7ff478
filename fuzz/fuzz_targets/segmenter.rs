//! The segmenter, both containers, on an arbitrary sequence of audio and video tags: each tag
//! is (kind, 3-byte timestamp step, 2-byte length, body) taken from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecast_media::segmenter::{Container, Segmenter};

fuzz_target!(|data: &[u8]| {
    for container in [Container::Ts, Container::Fmp4] {
        let mut segmenter = Segmenter::new(container, 1000, 250);
        segmenter.set_max_duration(1400);
        let mut ts: u32 = 0;
        let mut rest = data;
        while rest.len() >= 6 {
            let kind = rest[0];
            let step = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]);
            let len = usize::from(u16::from_be_bytes([rest[4], rest[5]])).min(rest.len() - 6);
            let body = &rest[6..6 + len];
            rest = &rest[6 + len..];
            // Mostly small steps forward; the top bit of the kind byte steps back.
            ts = if kind & 0x80 != 0 {
                ts.wrapping_sub(step)
            } else {
                ts.wrapping_add(step % 200)
            };
            let result = if kind & 1 == 0 {
                segmenter.push_video(ts, body)
            } else {
                segmenter.push_audio(ts, body)
            };
            if let Ok(Some(cut)) = result {
                assert!(cut.part.duration_ms >= 0);
            }
        }
        let _ = segmenter.finish();
    }
});
