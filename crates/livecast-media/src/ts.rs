//! MPEG-TS muxer (ISO/IEC 13818-1): PAT, PMT, PES packets with PTS/DTS, PCR on the clock
//! track, continuity counters per PID and the random-access indicator on keyframes.
//!
//! One program with at most one H.264 and one AAC (ADTS) elementary stream, which is what an
//! RTMP publish carries.

/// Size of a transport stream packet.
pub const PACKET_LEN: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the audio elementary stream.
pub const AUDIO_PID: u16 = 0x101;

const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const STREAM_ID_VIDEO: u8 = 0xe0;
const STREAM_ID_AUDIO: u8 = 0xc0;
/// 33-bit wrap of PTS/DTS/PCR base values.
const TS_MASK: u64 = (1 << 33) - 1;

/// Which elementary streams the program carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    /// A video stream on [`VIDEO_PID`].
    pub video: bool,
    /// The video stream is HEVC (stream type 0x24) rather than H.264 (0x1b).
    pub hevc: bool,
    /// An AAC stream on [`AUDIO_PID`].
    pub audio: bool,
}

/// Writes transport stream packets, keeping continuity counters across calls so that segments
/// cut from one muxer play back to back.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    tracks: Tracks,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

impl TsMuxer {
    /// A muxer for the given tracks; at least one must be present.
    pub fn new(tracks: Tracks) -> Self {
        Self {
            tracks,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
        }
    }

    /// The tracks this muxer announces in its PMT.
    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    fn pcr_pid(&self) -> u16 {
        if self.tracks.video {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Appends a PAT and a PMT; every segment starts with them so it can be decoded alone.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = vec![0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pat.extend_from_slice(&[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        write_section(out, 0, &mut self.cc_pat, pat);

        let pcr = self.pcr_pid();
        let mut pmt = vec![
            0x02,
            0xb0,
            0,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
            0xe0 | (pcr >> 8) as u8,
            pcr as u8,
            0xf0,
            0x00,
        ];
        if self.tracks.video {
            pmt.extend_from_slice(&[
                if self.tracks.hevc {
                    STREAM_TYPE_HEVC
                } else {
                    STREAM_TYPE_H264
                },
                0xe0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xf0,
                0,
            ]);
        }
        if self.tracks.audio {
            pmt.extend_from_slice(&[
                STREAM_TYPE_AAC_ADTS,
                0xe0 | (AUDIO_PID >> 8) as u8,
                AUDIO_PID as u8,
                0xf0,
                0,
            ]);
        }
        write_section(out, PMT_PID, &mut self.cc_pmt, pmt);
    }

    /// Appends one video access unit (Annex B) as a PES. Times are in 90 kHz units.
    pub fn write_video(
        &mut self,
        out: &mut Vec<u8>,
        pts: u64,
        dts: u64,
        keyframe: bool,
        data: &[u8],
    ) {
        let header = pes_header(STREAM_ID_VIDEO, pts, Some(dts), data.len(), true);
        let pcr = (self.pcr_pid() == VIDEO_PID).then_some(dts);
        write_pes(
            out,
            VIDEO_PID,
            &mut self.cc_video,
            &header,
            data,
            pcr,
            keyframe,
        );
    }

    /// Appends one audio frame (ADTS header included) as a PES. Times are in 90 kHz units.
    pub fn write_audio(&mut self, out: &mut Vec<u8>, pts: u64, data: &[u8]) {
        let header = pes_header(STREAM_ID_AUDIO, pts, None, data.len(), false);
        let clock = self.pcr_pid() == AUDIO_PID;
        write_pes(
            out,
            AUDIO_PID,
            &mut self.cc_audio,
            &header,
            data,
            clock.then_some(pts),
            clock,
        );
    }
}

fn write_section(out: &mut Vec<u8>, pid: u16, cc: &mut u8, mut section: Vec<u8>) {
    // section_length counts everything after its own field, CRC included.
    let len = section.len() - 3 + 4;
    section[1] = 0xb0 | ((len >> 8) as u8 & 0x0f);
    section[2] = len as u8;
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&[
        0x47,
        0x40 | (pid >> 8) as u8,
        pid as u8,
        0x10 | next_cc(cc),
        0x00,
    ]);
    out.extend_from_slice(&section);
    out.resize(start + PACKET_LEN, 0xff);
}

fn next_cc(cc: &mut u8) -> u8 {
    let now = *cc;
    *cc = (*cc + 1) & 0x0f;
    now
}

fn encode_time(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & TS_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7f) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7f) << 1) | 1,
    ]
}

fn pes_header(
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    payload_len: usize,
    unbounded: bool,
) -> Vec<u8> {
    let dts = dts.filter(|d| *d != pts);
    let header_data_len: usize = if dts.is_some() { 10 } else { 5 };
    let packet_len = 3 + header_data_len + payload_len;
    // Video PES may leave the length at zero ("unbounded"), and must when it does not fit.
    let length_field = if unbounded || packet_len > 0xffff {
        0
    } else {
        packet_len as u16
    };
    let mut h = Vec::with_capacity(9 + header_data_len);
    h.extend_from_slice(&[0, 0, 1, stream_id]);
    h.extend_from_slice(&length_field.to_be_bytes());
    h.push(0x84); // marker bits '10', data_alignment_indicator
    match dts {
        Some(dts) => {
            h.push(0xc0);
            h.push(10);
            h.extend_from_slice(&encode_time(0x3, pts));
            h.extend_from_slice(&encode_time(0x1, dts));
        }
        None => {
            h.push(0x80);
            h.push(5);
            h.extend_from_slice(&encode_time(0x2, pts));
        }
    }
    h
}

fn write_pes(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    header: &[u8],
    payload: &[u8],
    pcr: Option<u64>,
    random_access: bool,
) {
    let total = header.len() + payload.len();
    out.reserve((total / 184 + 2) * PACKET_LEN);
    let mut written = 0;
    let mut first = true;
    while written < total {
        let remaining = total - written;
        // The adaptation field's own content on the first packet: flags byte plus PCR.
        let mut af_body: Vec<u8> = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            if pcr.is_some() {
                flags |= 0x10;
            }
            af_body.push(flags);
            if let Some(pcr) = pcr {
                let base = pcr & TS_MASK;
                af_body.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    (((base & 1) as u8) << 7) | 0x7e,
                    0,
                ]);
            }
        }
        let mut af_len = if af_body.is_empty() {
            0
        } else {
            1 + af_body.len()
        };
        let mut room = 184 - af_len;
        if remaining < room {
            // Stuff the adaptation field so the last packet of the PES ends exactly.
            let stuffing = room - remaining;
            if af_len == 0 {
                af_len = stuffing;
                if stuffing > 1 {
                    af_body.push(0x00);
                    af_body.resize(stuffing - 1, 0xff);
                }
            } else {
                af_len += stuffing;
                af_body.resize(af_body.len() + stuffing, 0xff);
            }
            room = remaining;
        }
        let start = out.len();
        let pusi = if first { 0x40 } else { 0x00 };
        let afc = if af_len > 0 { 0x30 } else { 0x10 };
        out.extend_from_slice(&[
            0x47,
            pusi | (pid >> 8) as u8 & 0x1f,
            pid as u8,
            afc | next_cc(cc),
        ]);
        if af_len > 0 {
            out.push((af_len - 1) as u8);
            out.extend_from_slice(&af_body);
        }
        // Copy `room` bytes of header-then-payload starting at `written`.
        let mut need = room;
        let mut pos = written;
        while need > 0 {
            let (src, off) = if pos < header.len() {
                (header, pos)
            } else {
                (payload, pos - header.len())
            };
            let take = need.min(src.len() - off);
            out.extend_from_slice(&src[off..off + take]);
            need -= take;
            pos += take;
        }
        debug_assert_eq!(out.len() - start, PACKET_LEN);
        written += room;
        first = false;
    }
}

/// CRC-32/MPEG-2 as used by PSI sections.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in data {
        crc ^= u32::from(*byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Walks packets and checks sync bytes, continuity per PID and that PES payloads come back whole.
    fn reassemble(stream: &[u8]) -> HashMap<u16, Vec<Vec<u8>>> {
        assert_eq!(stream.len() % PACKET_LEN, 0);
        let mut last_cc: HashMap<u16, u8> = HashMap::new();
        let mut pes: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
        for pkt in stream.chunks(PACKET_LEN) {
            assert_eq!(pkt[0], 0x47);
            let pid = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
            let pusi = pkt[1] & 0x40 != 0;
            let afc = (pkt[3] >> 4) & 3;
            let cc = pkt[3] & 0x0f;
            if let Some(prev) = last_cc.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0f, "continuity on pid {pid:#x}");
            }
            let mut off = 4;
            if afc & 2 != 0 {
                off += 1 + usize::from(pkt[4]);
            }
            assert!(off <= PACKET_LEN);
            if pid == 0 || pid == PMT_PID {
                let section = &pkt[off + 1..];
                let len = (usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]);
                assert_eq!(crc32_mpeg2(&section[..3 + len]), 0, "psi crc");
                continue;
            }
            let entry = pes.entry(pid).or_default();
            if pusi {
                entry.push(Vec::new());
            }
            entry
                .last_mut()
                .expect("payload before pusi")
                .extend_from_slice(&pkt[off..]);
        }
        pes
    }

    fn strip_pes_header(pes: &[u8]) -> &[u8] {
        assert_eq!(&pes[..3], &[0, 0, 1]);
        &pes[9 + usize::from(pes[8])..]
    }

    proptest! {
        #[test]
        fn packetization_round_trips(
            frames in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 1..3000)), 1..20),
            start in 0u64..(1 << 34),
        ) {
            let mut mux = TsMuxer::new(Tracks {
                video: true,
                hevc: false,
                audio: true,
            });
            let mut out = Vec::new();
            mux.write_tables(&mut out);
            for (i, (is_video, data)) in frames.iter().enumerate() {
                let t = start + i as u64 * 3000;
                if *is_video {
                    mux.write_video(&mut out, t + 6000, t, i == 0, data);
                } else {
                    mux.write_audio(&mut out, t, data);
                }
            }
            let pes = reassemble(&out);
            let videos: Vec<_> = frames.iter().filter(|f| f.0).map(|f| f.1.clone()).collect();
            let audios: Vec<_> = frames.iter().filter(|f| !f.0).map(|f| f.1.clone()).collect();
            let got_v: Vec<_> = pes.get(&VIDEO_PID).map(|v| v.iter().map(|p| strip_pes_header(p).to_vec()).collect()).unwrap_or_default();
            let got_a: Vec<_> = pes.get(&AUDIO_PID).map(|v| v.iter().map(|p| strip_pes_header(p).to_vec()).collect()).unwrap_or_default();
            prop_assert_eq!(got_v, videos);
            prop_assert_eq!(got_a, audios);
        }
    }

    #[test]
    fn pts_encoding_round_trips_33_bits() {
        for ts in [0u64, 1, 90_000, (1 << 33) - 1, 0x1_2345_6789] {
            let b = encode_time(2, ts);
            let back = (u64::from(b[0] >> 1 & 7) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1);
            assert_eq!(back, ts & TS_MASK);
        }
    }
}
