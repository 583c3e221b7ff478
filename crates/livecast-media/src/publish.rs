//! The stream's publish facts, as the ingest leaves them beside the playlist for operators:
//! `<stream>/.publish` (a hidden name, so no front-end serves it), one `key=value` per line.
//!
//! ```text
//! started_unix_ms=1796186401123
//! segment_ms=2000
//! video=h264 1280x720
//! frame_rate=29.97
//! keyframe_interval_ms=2000
//! audio=aac
//! publisher=10.1.2.3:50123
//! ```
//!
//! Lines a reader does not know are skipped, so either side may grow first.

/// Whether `name` may be a stream's name. Names become directory names and URL path
/// segments, so they keep to a safe alphabet: 1 to 64 letters, digits, `_`, `-` and `.`, not
/// starting with `.` or `-`. The ingest refuses other publishes, and the balancer and
/// `livecast token` refuse to sign for other names.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// What separates a stream's name from a rendition's in a publish: `talk@720p` is the
/// `720p` rendition of stream `talk` (see [`split_rendition`]).
pub const RENDITION_SEPARATOR: char = '@';

/// Whether `name` may be a rendition's name: 1 to 16 letters, digits, `_` and `-`, not
/// starting with `-`. It becomes a directory name (`<stream>@<rendition>`) and a URL path
/// segment (`/hls/<stream>/<rendition>/`).
pub fn valid_rendition_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 16
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits a publish name into the stream's name and the rendition's, if it names one
/// (`talk@720p` → `("talk", Some("720p"))`); `None` when either part is not a valid name.
/// The same split turns a rendition's directory on the volume back into its stream.
pub fn split_rendition(name: &str) -> Option<(&str, Option<&str>)> {
    match name.split_once(RENDITION_SEPARATOR) {
        None => valid_stream_name(name).then_some((name, None)),
        Some((stream, rendition)) => (valid_stream_name(stream) && valid_rendition_name(rendition))
            .then_some((stream, Some(rendition))),
    }
}

use crate::segmenter::StreamInfo;

/// The file's name in the stream directory.
pub const PUBLISH_INFO_NAME: &str = ".publish";

/// What [`PUBLISH_INFO_NAME`] holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishInfo {
    /// When the publish began, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// The configured segment length (segments are cut at the first keyframe after it).
    pub segment_ms: u64,
    pub video_codec: Option<String>,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    pub keyframe_interval_ms: Option<u64>,
    pub audio_codec: Option<String>,
    /// The publisher's address (`IP:port`), for operators only.
    pub publisher: Option<String>,
    /// RFC 6381 codec strings of the tracks, comma-separated.
    pub codecs: Option<String>,
    /// Peak and average bits per second of the segments in the playlist window, as written.
    pub bandwidth: Option<u64>,
    pub average_bandwidth: Option<u64>,
}

impl PublishInfo {
    /// The facts of a publish that began at `started_unix_ms`, as measured so far.
    pub fn new(started_unix_ms: u64, segment_ms: u64, info: &StreamInfo) -> Self {
        Self {
            started_unix_ms,
            segment_ms,
            video_codec: info.video_codec.map(str::to_string),
            width: info.width,
            height: info.height,
            frame_rate: info.frame_rate,
            keyframe_interval_ms: info
                .keyframe_interval_ms
                .and_then(|ms| u64::try_from(ms).ok()),
            audio_codec: info.audio_codec.map(str::to_string),
            publisher: None,
            codecs: info.codecs.clone(),
            bandwidth: None,
            average_bandwidth: None,
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "started_unix_ms={}\nsegment_ms={}\n",
            self.started_unix_ms, self.segment_ms
        );
        if let Some(codec) = &self.video_codec {
            out.push_str(&format!("video={codec} {}x{}\n", self.width, self.height));
        }
        if let Some(fps) = self.frame_rate {
            out.push_str(&format!("frame_rate={fps}\n"));
        }
        if let Some(ms) = self.keyframe_interval_ms {
            out.push_str(&format!("keyframe_interval_ms={ms}\n"));
        }
        if let Some(codec) = &self.audio_codec {
            out.push_str(&format!("audio={codec}\n"));
        }
        if let Some(publisher) = &self.publisher {
            out.push_str(&format!("publisher={publisher}\n"));
        }
        if let Some(codecs) = &self.codecs {
            out.push_str(&format!("codecs={codecs}\n"));
        }
        if let Some(bps) = self.bandwidth {
            out.push_str(&format!("bandwidth={bps}\n"));
        }
        if let Some(bps) = self.average_bandwidth {
            out.push_str(&format!("average_bandwidth={bps}\n"));
        }
        out
    }

    /// Reads the file's text; what cannot be read is left at its default.
    pub fn parse(text: &str) -> Self {
        let mut info = Self::default();
        for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
            match key {
                "started_unix_ms" => info.started_unix_ms = value.parse().unwrap_or(0),
                "segment_ms" => info.segment_ms = value.parse().unwrap_or(0),
                "video" => {
                    let (codec, size) = value.split_once(' ').unwrap_or((value, ""));
                    info.video_codec = Some(codec.to_string());
                    if let Some((w, h)) = size.split_once('x') {
                        info.width = w.parse().unwrap_or(0);
                        info.height = h.parse().unwrap_or(0);
                    }
                }
                "frame_rate" => info.frame_rate = value.parse().ok(),
                "keyframe_interval_ms" => info.keyframe_interval_ms = value.parse().ok(),
                "audio" => info.audio_codec = Some(value.to_string()),
                "publisher" => info.publisher = Some(value.to_string()),
                "codecs" => info.codecs = Some(value.to_string()),
                "bandwidth" => info.bandwidth = value.parse().ok(),
                "average_bandwidth" => info.average_bandwidth = value.parse().ok(),
                _ => {}
            }
        }
        info
    }

    /// Why the encoder's keyframe interval does not suit the segment length, if it does not:
    /// segments are cut at the first keyframe after the target, so they come out as long as
    /// the first multiple of the keyframe interval that reaches it.
    pub fn keyframe_warning(&self) -> Option<String> {
        let interval = self.keyframe_interval_ms.filter(|ms| *ms > 0)?;
        let target = self.segment_ms.max(1);
        let actual = target.div_ceil(interval) * interval;
        (actual * 10 > target * 11).then(|| {
            format!(
                "keyframes every {:.1} s make {:.1} s segments instead of {:.1} s: set the encoder's keyframe interval to {:.1} s",
                interval as f64 / 1000.0,
                actual as f64 / 1000.0,
                target as f64 / 1000.0,
                target as f64 / 1000.0
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_names_keep_to_a_safe_alphabet() {
        for ok in ["cam1", "Main_Stage-2", "a.b"] {
            assert!(valid_stream_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a?b",
            "x y",
            "-flag",
            &"x".repeat(65),
        ] {
            assert!(!valid_stream_name(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn renditions_are_named_after_their_stream() {
        assert_eq!(split_rendition("talk"), Some(("talk", None)));
        assert_eq!(split_rendition("talk@720p"), Some(("talk", Some("720p"))));
        assert_eq!(split_rendition("a.b@low_1"), Some(("a.b", Some("low_1"))));
        for bad in [
            "@720p",
            "talk@",
            "talk@7.2",
            "talk@a@b",
            "talk@-x",
            ".x@720p",
            "talk@../x",
        ] {
            assert_eq!(split_rendition(bad), None, "{bad}");
        }
        assert!(!valid_stream_name("talk@720p"));
        assert!(!valid_rendition_name(&"x".repeat(17)));
    }

    #[test]
    fn round_trips_and_skips_unknown_lines() {
        let info = PublishInfo {
            started_unix_ms: 1_796_186_401_123,
            segment_ms: 2000,
            video_codec: Some("h264".into()),
            width: 1280,
            height: 720,
            frame_rate: Some(29.97),
            keyframe_interval_ms: Some(2000),
            audio_codec: Some("aac".into()),
            publisher: Some("10.1.2.3:50123".into()),
            codecs: Some("avc1.64001f,mp4a.40.2".into()),
            bandwidth: Some(2_900_000),
            average_bandwidth: Some(2_500_000),
        };
        let text = info.render() + "later=field\ngarbage\n";
        assert_eq!(PublishInfo::parse(&text), info);
        assert_eq!(PublishInfo::parse(""), PublishInfo::default());
    }

    #[test]
    fn warns_when_keyframes_stretch_segments() {
        let at = |segment_ms, keyframe_ms| PublishInfo {
            segment_ms,
            keyframe_interval_ms: Some(keyframe_ms),
            ..PublishInfo::default()
        };
        assert!(at(2000, 2000).keyframe_warning().is_none());
        assert!(
            at(2000, 1000).keyframe_warning().is_none(),
            "two keyframes a segment"
        );
        assert!(
            at(2000, 2033).keyframe_warning().is_none(),
            "a frame late is fine"
        );
        let warning = at(2000, 4000).keyframe_warning().unwrap();
        assert!(
            warning.contains("4.0 s segments instead of 2.0 s"),
            "{warning}"
        );
        assert!(at(2000, 1500).keyframe_warning().is_some(), "3 s segments");
    }
}
