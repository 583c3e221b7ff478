//! FLV tag bodies, AVC decoder configuration records and SPS, AVCC access units and AAC
//! AudioSpecificConfig on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecast_media::aac::AacConfig;
use livecast_media::avc::{self, AvcConfig};
use livecast_media::flv::{self, VideoTag};

fuzz_target!(|data: &[u8]| {
    let _ = flv::parse_audio(data);
    if let Ok(VideoTag::AvcFrame { keyframe, data: au, .. }) = flv::parse_video(data) {
        let _ = avc::split_avcc(au, 4);
        let _ = keyframe;
    }
    if let Ok(config) = AvcConfig::parse(data) {
        for sps in &config.sps {
            let _ = avc::sps_dimensions(sps);
        }
        let mut out = Vec::new();
        let _ = config.to_annex_b(data, true, &mut out);
    }
    let _ = avc::sps_dimensions(data);
    if let Ok(aac) = AacConfig::parse(data) {
        let _ = aac.adts_header(data.len());
    }
});
