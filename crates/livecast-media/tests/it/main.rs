//! Checks the muxer's output with real tools: ffmpeg makes an H.264 + AAC FLV file, the
//! segmenter packages it, and ffprobe must decode every frame of both tracks from the segments.

use std::path::Path;
use std::process::Command;

use livecast_media::segmenter::Segmenter;

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

#[test]
fn segments_decode_completely_with_ffprobe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tags = flv_tags(&make_clip(dir.path(), 6));
    let video_frames = tags
        .iter()
        .filter(|t| t.0 == 9 && t.2.get(1) == Some(&1))
        .count() as u64;
    let audio_frames = tags
        .iter()
        .filter(|t| t.0 == 8 && t.2.get(1) == Some(&1))
        .count() as u64;

    let mut seg = Segmenter::new(2000);
    let mut segments = Vec::new();
    for (kind, ts, body) in &tags {
        let cut = match kind {
            9 => seg.push_video(*ts, body).expect("video tag"),
            8 => seg.push_audio(*ts, body).expect("audio tag"),
            _ => None,
        };
        segments.extend(cut);
    }
    segments.extend(seg.finish());
    assert_eq!(
        segments.len(),
        3,
        "a 6 s clip with a 2 s GOP makes three segments"
    );
    for s in &segments {
        let all: Vec<i64> = segments.iter().map(|s| s.duration_ms).collect();
        assert!((s.duration_ms - 2000).abs() <= 100, "durations {all:?}");
        assert!(s.independent);
    }

    // Each segment alone decodes (it starts with tables and a keyframe) ...
    let first = dir.path().join("first.ts");
    std::fs::write(&first, &segments[0].data).expect("write");
    assert_eq!(ffprobe_count(&first, "v:0").0, "h264");
    // ... and the concatenation decodes every frame that went in.
    let all = dir.path().join("all.ts");
    let joined: Vec<u8> = segments
        .iter()
        .flat_map(|s| s.data.iter().copied())
        .collect();
    std::fs::write(&all, joined).expect("write");
    assert_eq!(
        ffprobe_count(&all, "v:0"),
        ("h264".to_string(), video_frames)
    );
    let (codec, frames) = ffprobe_count(&all, "a:0");
    assert_eq!(codec, "aac");
    assert_eq!(frames, audio_frames);
}
