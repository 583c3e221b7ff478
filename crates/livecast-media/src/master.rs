//! The HLS master (multivariant) playlist: one `EXT-X-STREAM-INF` per variant (RFC 8216
//! §4.3.4.2), parsed and written.

use std::fmt::Write as _;

use crate::playlist::{attr, attributes, ParseError};

/// One variant stream: a media playlist and what a player needs to choose it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Variant {
    /// The media playlist's URI, as written (relative to the master's).
    pub uri: String,
    /// Peak bits per second (BANDWIDTH, required).
    pub bandwidth: u64,
    /// Average bits per second (AVERAGE-BANDWIDTH).
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings (CODECS), e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: Option<String>,
    /// Picture width and height (RESOLUTION).
    pub resolution: Option<(u32, u32)>,
    /// Frames per second (FRAME-RATE).
    pub frame_rate: Option<f64>,
}

/// A master playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MasterPlaylist {
    pub variants: Vec<Variant>,
    /// EXT-X-INDEPENDENT-SEGMENTS: every segment starts with a keyframe.
    pub independent_segments: bool,
}

impl MasterPlaylist {
    /// Whether `text` is a master playlist rather than a media playlist.
    pub fn is_master(text: &str) -> bool {
        text.lines().any(|l| l.starts_with("#EXT-X-STREAM-INF:"))
    }

    /// Parses a master playlist. Tags other than the ones modelled are ignored.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text.lines().map(str::trim_end);
        if lines.next() != Some("#EXTM3U") {
            return Err(ParseError("missing #EXTM3U"));
        }
        let mut out = MasterPlaylist::default();
        let mut pending: Option<Variant> = None;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if let Some(value) = line.strip_prefix("#EXT-X-STREAM-INF:") {
                let attrs = attributes(value);
                let number = |k| attr(&attrs, k).and_then(|v: &str| v.parse::<u64>().ok());
                pending = Some(Variant {
                    uri: String::new(),
                    bandwidth: number("BANDWIDTH")
                        .ok_or(ParseError("EXT-X-STREAM-INF without BANDWIDTH"))?,
                    average_bandwidth: number("AVERAGE-BANDWIDTH"),
                    codecs: attr(&attrs, "CODECS").map(str::to_string),
                    resolution: attr(&attrs, "RESOLUTION").and_then(|r| {
                        let (w, h) = r.split_once('x')?;
                        Some((w.parse().ok()?, h.parse().ok()?))
                    }),
                    frame_rate: attr(&attrs, "FRAME-RATE").and_then(|v| v.parse().ok()),
                });
            } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
                out.independent_segments = true;
            } else if !line.starts_with('#') {
                let mut variant = pending
                    .take()
                    .ok_or(ParseError("URI without EXT-X-STREAM-INF"))?;
                variant.uri = line.to_string();
                out.variants.push(variant);
            }
        }
        if pending.is_some() {
            return Err(ParseError("EXT-X-STREAM-INF without a URI"));
        }
        if out.variants.is_empty() {
            return Err(ParseError("a master playlist without variants"));
        }
        Ok(out)
    }

    /// Writes the playlist text.
    pub fn render(&self) -> String {
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n");
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for v in &self.variants {
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
            if let Some(avg) = v.average_bandwidth {
                let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
            }
            if let Some(codecs) = &v.codecs {
                let _ = write!(out, ",CODECS=\"{codecs}\"");
            }
            if let Some((w, h)) = v.resolution {
                let _ = write!(out, ",RESOLUTION={w}x{h}");
            }
            if let Some(fps) = v.frame_rate {
                let _ = write!(out, ",FRAME-RATE={fps:.3}");
            }
            let _ = writeln!(out, "\n{}", v.uri);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_quoted_codecs() {
        let text = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2800000,AVERAGE-BANDWIDTH=2500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\n\
            hi/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=426x240\n\
            lo/index.m3u8\n";
        let master = MasterPlaylist::parse(text).unwrap();
        assert!(MasterPlaylist::is_master(text));
        assert_eq!(master.variants.len(), 2);
        let hi = &master.variants[0];
        assert_eq!(hi.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(hi.resolution, Some((1280, 720)));
        assert_eq!(hi.average_bandwidth, Some(2_500_000));
        assert_eq!(hi.frame_rate, Some(30.0));
        assert_eq!(master.variants[1].uri, "lo/index.m3u8");
        assert_eq!(MasterPlaylist::parse(&master.render()).unwrap(), master);
    }

    #[test]
    fn refuses_what_is_not_a_master() {
        assert!(MasterPlaylist::parse("#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na\n").is_err());
        assert!(MasterPlaylist::parse("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n").is_err());
        assert!(MasterPlaylist::parse("#EXTM3U\n").is_err());
        assert!(!MasterPlaylist::is_master(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n"
        ));
    }
}
