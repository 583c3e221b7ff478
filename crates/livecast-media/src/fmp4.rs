//! Fragmented MP4 (ISO/IEC 14496-12, CMAF-style) for HLS: an initialization segment (`ftyp` +
//! `moov` with one track per elementary stream and `mvex`) and media fragments (`moof` + `mdat`),
//! one fragment per LL-HLS part.
//!
//! Video runs on a 90 kHz timescale, audio on its sample rate. Samples are stored as the
//! publisher sent them: length-prefixed NAL units (the decoder configuration record goes into the
//! sample entry verbatim) and raw AAC frames.

/// Video track id in the movie.
pub const VIDEO_TRACK: u32 = 1;
/// Audio track id in the movie.
pub const AUDIO_TRACK: u32 = 2;
/// Timescale of the video track.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// The video codec of the movie and its decoder configuration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264: an AVCDecoderConfigurationRecord (`avc1` + `avcC`).
    Avc(Vec<u8>),
    /// H.265: an HEVCDecoderConfigurationRecord (`hvc1` + `hvcC`).
    Hevc(Vec<u8>),
    /// AV1: an AV1CodecConfigurationRecord (`av01` + `av1C`).
    Av1(Vec<u8>),
}

/// The video track of a movie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// Codec and configuration record.
    pub codec: VideoCodec,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The audio track of a movie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    /// The AudioSpecificConfig.
    pub config: Vec<u8>,
    /// Samples per second (the track's timescale).
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
}

/// One sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Size in bytes.
    pub size: u32,
    /// Whether a decoder can start here.
    pub sync: bool,
    /// Composition offset (PTS − DTS) in the track's timescale.
    pub composition_offset: i32,
}

/// The samples of one track in a fragment, with their bytes in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackRun {
    /// Decode time of the first sample in the track's timescale.
    pub base_decode_time: u64,
    /// The samples.
    pub samples: Vec<Sample>,
    /// The samples' bytes, back to back.
    pub data: Vec<u8>,
}

/// Writes the initialization segment for the given tracks.
pub fn init_segment(video: Option<&VideoTrack>, audio: Option<&AudioTrack>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |b| {
        b.extend_from_slice(b"iso6");
        b.extend_from_slice(&0u32.to_be_bytes());
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            b.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |moov| {
        full_box(moov, b"mvhd", 0, 0, |b| {
            b.extend_from_slice(&[0; 8]); // creation, modification
            b.extend_from_slice(&1000u32.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes()); // duration: unknown (fragmented)
            b.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
            b.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            matrix(b);
            b.extend_from_slice(&[0; 24]); // pre_defined
            b.extend_from_slice(&3u32.to_be_bytes()); // next_track_ID
        });
        if let Some(v) = video {
            trak(
                moov,
                VIDEO_TRACK,
                VIDEO_TIMESCALE,
                Some((v.width, v.height)),
                |stsd| video_entry(stsd, v),
            );
        }
        if let Some(a) = audio {
            trak(moov, AUDIO_TRACK, a.sample_rate, None, |stsd| {
                audio_entry(stsd, a)
            });
        }
        boxed(moov, b"mvex", |mvex| {
            for (present, id) in [
                (video.is_some(), VIDEO_TRACK),
                (audio.is_some(), AUDIO_TRACK),
            ] {
                if present {
                    full_box(mvex, b"trex", 0, 0, |b| {
                        b.extend_from_slice(&id.to_be_bytes());
                        b.extend_from_slice(&1u32.to_be_bytes()); // sample description index
                        b.extend_from_slice(&[0; 12]); // default duration, size, flags
                    });
                }
            }
        });
    });
    out
}

/// Writes one fragment (`moof` + `mdat`) with sequence number `sequence`: the video run (track
/// [`VIDEO_TRACK`]) then the audio run (track [`AUDIO_TRACK`]); empty runs are left out.
pub fn fragment(sequence: u32, video: &TrackRun, audio: &TrackRun) -> Vec<u8> {
    let runs: Vec<(u32, &TrackRun)> = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)]
        .into_iter()
        .filter(|(_, run)| !run.samples.is_empty())
        .collect();
    let data_len: usize = runs.iter().map(|(_, r)| r.data.len()).sum();
    let mut out = Vec::with_capacity(256 + data_len + runs.len() * 16 * 64);
    // Where each trun's data_offset field sits; nested boxes write into `out` itself.
    let mut offset_fields = Vec::with_capacity(runs.len());
    boxed(&mut out, b"moof", |moof| {
        full_box(moof, b"mfhd", 0, 0, |b| {
            b.extend_from_slice(&sequence.to_be_bytes())
        });
        for (id, run) in &runs {
            boxed(moof, b"traf", |traf| {
                // default-base-is-moof: data offsets count from the start of the moof.
                full_box(traf, b"tfhd", 0, 0x02_0000, |b| {
                    b.extend_from_slice(&id.to_be_bytes())
                });
                full_box(traf, b"tfdt", 1, 0, |b| {
                    b.extend_from_slice(&run.base_decode_time.to_be_bytes())
                });
                let video = *id == VIDEO_TRACK;
                // data offset, duration, size, and for video flags and composition offsets.
                let flags = if video { 0xf01 } else { 0x301 };
                full_box(traf, b"trun", u8::from(video), flags, |b| {
                    b.extend_from_slice(&(run.samples.len() as u32).to_be_bytes());
                    // data_offset, patched once the moof's size is known.
                    offset_fields.push(b.len());
                    b.extend_from_slice(&0u32.to_be_bytes());
                    for s in &run.samples {
                        b.extend_from_slice(&s.duration.to_be_bytes());
                        b.extend_from_slice(&s.size.to_be_bytes());
                        if video {
                            let flags: u32 = if s.sync { 0x0200_0000 } else { 0x0101_0000 };
                            b.extend_from_slice(&flags.to_be_bytes());
                            b.extend_from_slice(&s.composition_offset.to_be_bytes());
                        }
                    }
                });
            });
        }
    });
    let moof_len = out.len();
    let mut data_start = moof_len + 8;
    for (position, (_, run)) in offset_fields.into_iter().zip(&runs) {
        out[position..position + 4].copy_from_slice(&(data_start as u32).to_be_bytes());
        data_start += run.data.len();
    }
    out.extend_from_slice(&((8 + data_len) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (_, run) in &runs {
        out.extend_from_slice(&run.data);
    }
    out
}

fn trak(
    moov: &mut Vec<u8>,
    id: u32,
    timescale: u32,
    size: Option<(u32, u32)>,
    entry: impl FnOnce(&mut Vec<u8>),
) {
    boxed(moov, b"trak", |trak| {
        full_box(trak, b"tkhd", 0, 3, |b| {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&0u32.to_be_bytes()); // duration
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&0u16.to_be_bytes()); // layer
            b.extend_from_slice(&0u16.to_be_bytes()); // alternate group
            let volume: u16 = if size.is_none() { 0x0100 } else { 0 };
            b.extend_from_slice(&volume.to_be_bytes());
            b.extend_from_slice(&[0; 2]);
            matrix(b);
            let (w, h) = size.unwrap_or((0, 0));
            b.extend_from_slice(&(w << 16).to_be_bytes());
            b.extend_from_slice(&(h << 16).to_be_bytes());
        });
        boxed(trak, b"mdia", |mdia| {
            full_box(mdia, b"mdhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]);
                b.extend_from_slice(&timescale.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
                b.extend_from_slice(&[0; 2]);
            });
            let (handler, name): (&[u8; 4], &[u8]) = if size.is_some() {
                (b"vide", b"livecast video\0")
            } else {
                (b"soun", b"livecast audio\0")
            };
            full_box(mdia, b"hdlr", 0, 0, |b| {
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(handler);
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(name);
            });
            boxed(mdia, b"minf", |minf| {
                if size.is_some() {
                    full_box(minf, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                } else {
                    full_box(minf, b"smhd", 0, 0, |b| b.extend_from_slice(&[0; 4]));
                }
                boxed(minf, b"dinf", |dinf| {
                    full_box(dinf, b"dref", 0, 0, |b| {
                        b.extend_from_slice(&1u32.to_be_bytes());
                        full_box(b, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(minf, b"stbl", |stbl| {
                    full_box(stbl, b"stsd", 0, 0, |b| {
                        b.extend_from_slice(&1u32.to_be_bytes());
                        entry(b);
                    });
                    for kind in [b"stts", b"stsc", b"stco"] {
                        full_box(stbl, kind, 0, 0, |b| b.extend_from_slice(&[0; 4]));
                    }
                    full_box(stbl, b"stsz", 0, 0, |b| b.extend_from_slice(&[0; 8]));
                });
            });
        });
    });
}

fn video_entry(out: &mut Vec<u8>, track: &VideoTrack) {
    let (kind, config_kind, record) = match &track.codec {
        VideoCodec::Avc(record) => (b"avc1", b"avcC", record),
        VideoCodec::Hevc(record) => (b"hvc1", b"hvcC", record),
        VideoCodec::Av1(record) => (b"av01", b"av1C", record),
    };
    boxed(out, kind, |b| {
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&(track.width.min(0xffff) as u16).to_be_bytes());
        b.extend_from_slice(&(track.height.min(0xffff) as u16).to_be_bytes());
        b.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
        b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&1u16.to_be_bytes()); // frame count
        b.extend_from_slice(&[0; 32]); // compressor name
        b.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
        b.extend_from_slice(&0xffffu16.to_be_bytes());
        boxed(b, config_kind, |c| c.extend_from_slice(record));
    });
}

fn audio_entry(out: &mut Vec<u8>, track: &AudioTrack) {
    boxed(out, b"mp4a", |b| {
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&track.channels.to_be_bytes());
        b.extend_from_slice(&16u16.to_be_bytes()); // sample size
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&(track.sample_rate.min(0xffff) << 16).to_be_bytes());
        full_box(b, b"esds", 0, 0, |e| {
            // ES_Descriptor > DecoderConfigDescriptor > DecoderSpecificInfo, SLConfigDescriptor.
            let mut specific = Vec::new();
            descriptor(&mut specific, 0x05, &track.config);
            let mut decoder = vec![0x40, 0x15, 0, 0, 0];
            decoder.extend_from_slice(&[0; 8]); // max and average bitrate: unknown
            decoder.extend_from_slice(&specific);
            let mut es = vec![0, AUDIO_TRACK as u8, 0];
            descriptor(&mut es, 0x04, &decoder);
            descriptor(&mut es, 0x06, &[0x02]);
            descriptor(e, 0x03, &es);
        });
    });
}

/// An MPEG-4 descriptor with its length in the four-byte expandable form.
fn descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let len = body.len() as u32;
    out.push(tag);
    out.extend_from_slice(&[
        0x80 | ((len >> 21) & 0x7f) as u8,
        0x80 | ((len >> 14) & 0x7f) as u8,
        0x80 | ((len >> 7) & 0x7f) as u8,
        (len & 0x7f) as u8,
    ]);
    out.extend_from_slice(body);
}

fn matrix(b: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.extend_from_slice(&v.to_be_bytes());
    }
}

fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |b| {
        b.push(version);
        b.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(b);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions of the data_offset field of every `trun` in a `moof`, in order.
    fn trun_offset_positions(moof: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        walk(moof, 0, &mut |kind, start| {
            if kind == b"trun" {
                // header (8) + version/flags (4) + sample_count (4)
                found.push(start + 16);
            }
        });
        found
    }

    fn walk(buf: &[u8], base: usize, visit: &mut impl FnMut(&[u8], usize)) {
        let mut pos = 0;
        while pos + 8 <= buf.len() {
            let size =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if size < 8 || pos + size > buf.len() {
                return;
            }
            let kind = &buf[pos + 4..pos + 8];
            visit(kind, base + pos);
            if matches!(kind, b"moof" | b"traf") {
                walk(&buf[pos + 8..pos + size], base + pos + 8, visit);
            }
            pos += size;
        }
    }

    fn boxes(buf: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 8 <= buf.len() {
            let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&buf[pos + 4..pos + 8]).into(), size));
            assert!(size >= 8 && pos + size <= buf.len(), "box overruns");
            pos += size;
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn fragment_offsets_point_into_mdat() {
        let video = TrackRun {
            base_decode_time: 9000,
            samples: vec![
                Sample {
                    duration: 3000,
                    size: 3,
                    sync: true,
                    composition_offset: 0,
                },
                Sample {
                    duration: 3000,
                    size: 2,
                    sync: false,
                    composition_offset: -3000,
                },
            ],
            data: vec![1, 2, 3, 4, 5],
        };
        let audio = TrackRun {
            base_decode_time: 4800,
            samples: vec![Sample {
                duration: 1024,
                size: 2,
                sync: true,
                composition_offset: 0,
            }],
            data: vec![9, 8],
        };
        let frag = fragment(7, &video, &audio);
        let top = boxes(&frag);
        assert_eq!(top[0].0, "moof");
        assert_eq!(top[1], ("mdat".to_string(), 8 + 7));
        let positions = trun_offset_positions(&frag[..top[0].1]);
        assert_eq!(positions.len(), 2);
        let offsets: Vec<usize> = positions
            .iter()
            .map(|&p| u32::from_be_bytes(frag[p..p + 4].try_into().unwrap()) as usize)
            .collect();
        assert_eq!(&frag[offsets[0]..offsets[0] + 5], &[1, 2, 3, 4, 5]);
        assert_eq!(&frag[offsets[1]..offsets[1] + 2], &[9, 8]);
        // Without audio samples the audio traf is left out.
        let only_video = fragment(8, &video, &TrackRun::default());
        assert_eq!(trun_offset_positions(&only_video).len(), 1);
    }

    #[test]
    fn init_segment_is_well_formed() {
        let init = init_segment(
            Some(&VideoTrack {
                codec: VideoCodec::Avc(vec![1, 0x64, 0, 0x1f, 0xff, 0xe1]),
                width: 1280,
                height: 720,
            }),
            Some(&AudioTrack {
                config: vec![0x12, 0x10],
                sample_rate: 44_100,
                channels: 2,
            }),
        );
        let top = boxes(&init);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let text = String::from_utf8_lossy(&init);
        for kind in [
            "mvhd", "trak", "avc1", "avcC", "mp4a", "esds", "mvex", "trex",
        ] {
            assert!(text.contains(kind), "{kind} missing");
        }
    }
}
