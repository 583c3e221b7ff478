//! Checks the muxers' output with real tools: ffmpeg makes an H.264 + AAC FLV file, the
//! segmenter packages it as MPEG-TS and as fMP4, and ffprobe must decode every frame of both
//! tracks from the segments, and an independent part on its own.

use std::path::Path;
use std::process::Command;

use livecast_media::segmenter::{Container, Cut, Part, Segment, Segmenter};

/// Reads the tags of an FLV file: (type, timestamp, body).
fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    assert_eq!(&file[..3], b"FLV");
    let mut pos = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= file.len() {
        let kind = file[pos] & 0x1f;
        let size = u32::from_be_bytes([0, file[pos + 1], file[pos + 2], file[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([file[pos + 7], file[pos + 4], file[pos + 5], file[pos + 6]]);
        let body = file[pos + 11..pos + 11 + size].to_vec();
        tags.push((kind, ts, body));
        pos += 11 + size + 4;
    }
    tags
}

fn make_clip(dir: &Path, seconds: u32) -> Vec<u8> {
    let path = dir.join("clip.flv");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=320x240:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-bf",
            "2",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg must be installed (see .ci/run)");
    assert!(status.success());
    std::fs::read(path).expect("clip written")
}

fn ffprobe_count(file: &Path, stream: &str) -> (String, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", stream])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe must be installed (see .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text.lines().next().unwrap_or_default();
    let (codec, frames) = line.trim().split_once(',').expect("codec,frames");
    (codec.to_string(), frames.parse().expect("frame count"))
}

struct Packaged {
    parts: Vec<Part>,
    segments: Vec<Segment>,
    init: Option<Vec<u8>>,
    video_frames: u64,
    audio_frames: u64,
}

/// Packages a 6 s clip (2 s GOP, B-frames) with 500 ms parts.
fn package(dir: &Path, container: Container) -> Packaged {
    let tags = flv_tags(&make_clip(dir, 6));
    let count = |kind: u8| {
        tags.iter()
            .filter(|t| t.0 == kind && t.2.get(1) == Some(&1))
            .count() as u64
    };
    let mut seg = Segmenter::new(container, 2000, 500);
    let (mut parts, mut segments) = (Vec::new(), Vec::new());
    let mut take = |cut: Option<Cut>| {
        if let Some(cut) = cut {
            parts.push(cut.part);
            segments.extend(cut.segment);
        }
    };
    for (kind, ts, body) in &tags {
        take(match kind {
            9 => seg.push_video(*ts, body).expect("video tag"),
            8 => seg.push_audio(*ts, body).expect("audio tag"),
            _ => None,
        });
    }
    take(seg.finish());
    assert_eq!(
        segments.len(),
        3,
        "a 6 s clip with a 2 s GOP makes three segments"
    );
    let all: Vec<i64> = segments.iter().map(|s| s.duration_ms).collect();
    for s in &segments {
        assert!((s.duration_ms - 2000).abs() <= 100, "durations {all:?}");
        assert!(s.independent);
    }
    let part_durations: Vec<i64> = parts.iter().map(|p| p.duration_ms).collect();
    assert!(
        part_durations.iter().all(|d| (1..=500).contains(d)),
        "part durations {part_durations:?}"
    );
    // The parts tile the segments exactly.
    let joined = |chunks: &mut dyn Iterator<Item = &Vec<u8>>| -> Vec<u8> {
        chunks.flat_map(|c| c.iter().copied()).collect()
    };
    assert_eq!(
        joined(&mut parts.iter().map(|p| &p.data)),
        joined(&mut segments.iter().map(|s| &s.data))
    );
    Packaged {
        video_frames: count(9),
        audio_frames: count(8),
        init: seg.init_segment().map(<[u8]>::to_vec),
        parts,
        segments,
    }
}

/// ffprobe decodes every video and audio frame that went into the segmenter from `file`.
fn assert_every_frame(file: &Path, p: &Packaged) {
    assert_eq!(
        ffprobe_count(file, "v:0"),
        ("h264".to_string(), p.video_frames)
    );
    assert_eq!(
        ffprobe_count(file, "a:0"),
        ("aac".to_string(), p.audio_frames)
    );
}

fn write(dir: &Path, name: &str, chunks: &[&[u8]]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, chunks.concat()).expect("write");
    path
}

#[test]
fn ts_segments_decode_completely_with_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = package(dir.path(), Container::Ts);
    assert!(p.init.is_none());
    // Each segment alone decodes (it starts with tables and a keyframe) ...
    let first = write(dir.path(), "first.ts", &[&p.segments[0].data]);
    assert_eq!(ffprobe_count(&first, "v:0").0, "h264");
    // ... so does an independent part in the middle ...
    let part = p
        .parts
        .iter()
        .find(|part| part.start_ms == p.segments[1].start_ms)
        .expect("the part that starts the second segment");
    assert!(part.independent);
    let alone = write(dir.path(), "part.ts", &[&part.data]);
    assert_eq!(ffprobe_count(&alone, "v:0").0, "h264");
    // ... and the concatenation decodes every frame that went in.
    let data: Vec<&[u8]> = p.segments.iter().map(|s| s.data.as_slice()).collect();
    let all = write(dir.path(), "all.ts", &data);
    assert_every_frame(&all, &p);
}

#[test]
fn fmp4_segments_decode_completely_with_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = package(dir.path(), Container::Fmp4);
    let init = p.init.clone().expect("an init segment");
    // The init segment plus the fragments decode every frame, at the clip's size and length.
    let mut data: Vec<&[u8]> = vec![&init];
    data.extend(p.segments.iter().map(|s| s.data.as_slice()));
    let all = write(dir.path(), "all.mp4", &data);
    assert_every_frame(&all, &p);
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height:format=duration", "-of", "csv=p=0"])
        .arg(&all)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("320,240"), "{text}");
    let duration: f64 = lines.next().unwrap_or_default().parse().expect("duration");
    assert!((duration - 6.0).abs() < 0.2, "duration {duration}");
    // An independent part from the middle decodes with the init segment alone.
    let part = p
        .parts
        .iter()
        .find(|part| part.start_ms == p.segments[1].start_ms)
        .expect("the part that starts the second segment");
    assert!(part.independent);
    let alone = write(dir.path(), "part.mp4", &[&init, &part.data]);
    let (codec, frames) = ffprobe_count(&alone, "v:0");
    assert_eq!(codec, "h264");
    assert!(frames >= 10, "{frames} frames in a 500 ms part");
}
