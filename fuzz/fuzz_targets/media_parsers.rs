//! FLV and Enhanced RTMP tag bodies, AVC, HEVC and AV1 decoder configuration records and SPS,
//! length-prefixed access units and AAC AudioSpecificConfig on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecast_media::aac::AacConfig;
use livecast_media::av1::Av1Config;
use livecast_media::avc::{self, AvcConfig};
use livecast_media::flv::{self, VideoTag};
use livecast_media::hevc::{self, HevcConfig};

fuzz_target!(|data: &[u8]| {
    let _ = flv::parse_audio(data);
    if let Ok(VideoTag::Frame { data: au, .. }) = flv::parse_video(data) {
        let _ = avc::split_avcc(au, 4);
    }
    if let Ok(config) = HevcConfig::parse(data) {
        for sps in &config.sps {
            let _ = hevc::sps_dimensions(sps);
        }
        let mut out = Vec::new();
        let _ = config.to_annex_b(data, true, &mut out);
    }
    let _ = hevc::sps_dimensions(data);
    if let Ok(config) = AvcConfig::parse(data) {
        for sps in &config.sps {
            let _ = avc::sps_dimensions(sps);
        }
        let mut out = Vec::new();
        let _ = config.to_annex_b(data, true, &mut out);
    }
    let _ = avc::sps_dimensions(data);
    let _ = Av1Config::parse(data);
    if let Ok(aac) = AacConfig::parse(data) {
        let _ = aac.adts_header(data.len());
    }
});
