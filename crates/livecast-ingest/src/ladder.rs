//! The server-side ladder (`--ladder`): an ffmpeg child per publish transcodes it into lower
//! renditions, which come back to this ingest as publishes of `<stream>@<height>p` and go
//! through the same pipeline as any publish (see `renditions`).
//!
//! The publish's FLV tags are copied to the child's stdin as an FLV stream, with the
//! publisher's timestamps; the child keeps them (`-copyts`), forces a keyframe wherever the
//! source has one (`-force_key_frames source`) and sends no B-frames (`-tune zerolatency`),
//! so every rendition's frames are presented at the source's times and its segments are cut
//! at the same frames. Audio is copied. The child publishes each rung over RTMP to this
//! ingest's own listener with a secret made at start, which admits it past the publish checks
//! (the name it publishes is the stream's own, already admitted).
//!
//! The child is supervised: a child that cannot start (no ffmpeg) leaves the stream at its
//! source rendition, logged and counted, and is tried again with backoff like one that died;
//! one that restarts is fed from the next keyframe, and its renditions continue after a
//! discontinuity. The publish never waits for the child: its copy of the media goes through a
//! bounded queue, and what does not fit is dropped up to the next keyframe (counted). When the
//! publish ends, the child's stdin is closed so it writes its last frames, and it is killed if
//! it has not exited within a few seconds. Its CPU time is counted from `/proc`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livecast_media::flv::{self, VideoTag};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::pipeline::MediaMessage;
use crate::shared::Shared;

/// The ladder when `--ladder` is given without a value: 480p at 1.2 Mb/s, 240p at 400 kb/s.
pub const DEFAULT_LADDER: &str = "480:1200,240:400";

/// Messages queued for the child before the publish's copy is dropped.
const QUEUE: usize = 512;
/// How long a stopped publish's child has to write its last frames.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Restart delays: doubling from the first to the last; reset after a child ran this long.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const RAN_LONG_ENOUGH: Duration = Duration::from_secs(30);
/// Lines of a child's stderr logged per run; the rest are dropped (its last line is kept).
const STDERR_LINES: usize = 20;

/// One rung: a rendition `height` pixels high at `kbps` kilobits per second of video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub kbps: u32,
}

impl Rung {
    /// The rendition's name: `480p`.
    pub fn name(&self) -> String {
        format!("{}p", self.height)
    }
}

/// The `--ladder` value: rungs, tallest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(pub Vec<Rung>);

impl std::str::FromStr for Ladder {
    type Err = String;

    /// `HEIGHT:KBPS[,HEIGHT:KBPS...]`, e.g. `480:1200,240:400` (a `p` after the height and a
    /// `k` after the rate are allowed).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut rungs = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (height, kbps) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?}: expected HEIGHT:KBPS, e.g. 480:1200"))?;
            let height: u32 = height
                .trim_end_matches('p')
                .parse()
                .map_err(|_| format!("{item:?}: the height is not a number"))?;
            let kbps: u32 = kbps
                .trim_end_matches('k')
                .parse()
                .map_err(|_| format!("{item:?}: the bit rate is not a number of kb/s"))?;
            if !(64..=2160).contains(&height) || !height.is_multiple_of(2) {
                return Err(format!(
                    "{item:?}: the height must be even and between 64 and 2160"
                ));
            }
            if !(50..=50_000).contains(&kbps) {
                return Err(format!(
                    "{item:?}: the bit rate must be between 50 and 50000 kb/s"
                ));
            }
            if rungs.iter().any(|r: &Rung| r.height == height) {
                return Err(format!("{item:?}: two rungs of height {height}"));
            }
            rungs.push(Rung { height, kbps });
        }
        if rungs.len() > 6 {
            return Err("at most 6 rungs".into());
        }
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        Ok(Self(rungs))
    }
}

/// The `--ladder` flags; `livecast up` takes the same.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LadderFlags {
    /// Transcode every publish into lower renditions (server-side ladder): HEIGHT:KBPS pairs,
    /// comma-separated; given without a value, 480:1200,240:400. Needs ffmpeg with libx264.
    /// Rungs as tall as the source or taller are left out. Off by default.
    #[arg(
        long,
        env = "LIVECAST_LADDER",
        num_args = 0..=1,
        default_missing_value = DEFAULT_LADDER,
        value_name = "RUNGS"
    )]
    pub ladder: Option<Ladder>,
    /// The ffmpeg the ladder runs.
    #[arg(long, env = "LIVECAST_LADDER_FFMPEG", default_value = "ffmpeg")]
    pub ladder_ffmpeg: PathBuf,
    /// x264 preset of the ladder (faster presets cost less CPU for more bits).
    #[arg(
        long,
        env = "LIVECAST_LADDER_PRESET",
        default_value = "veryfast",
        value_parser = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
    )]
    pub ladder_preset: String,
}

impl LadderFlags {
    /// Whether publishes are transcoded.
    pub fn enabled(&self) -> bool {
        self.ladder.as_ref().is_some_and(|l| !l.0.is_empty())
    }
}

/// The ffmpeg command line for `stream` at `source_height`: FLV on stdin, one RTMP output per
/// rung shorter than the source, published to `target` (rtmp://HOST:PORT/live) with `secret`.
/// `None` when no rung is shorter than the source.
pub fn ffmpeg_args(
    flags: &LadderFlags,
    stream: &str,
    source_height: u32,
    target: &str,
    secret: &str,
) -> Option<Vec<String>> {
    let rungs: Vec<Rung> = flags
        .ladder
        .iter()
        .flat_map(|l| l.0.iter().copied())
        .filter(|r| r.height < source_height)
        .collect();
    if rungs.is_empty() {
        return None;
    }
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "warning",
        // Start as soon as the sequence headers and the first keyframe are in.
        "-probesize",
        "32768",
        "-analyzeduration",
        "0",
        "-copyts",
        "-f",
        "flv",
        "-i",
        "pipe:0",
    ]
    .map(String::from)
    .to_vec();
    for rung in &rungs {
        let kbps = rung.kbps;
        args.extend([
            "-map".to_string(),
            "0:v:0".into(),
            "-map".into(),
            "0:a:0?".into(),
            "-vf".into(),
            format!("scale=-2:{}", rung.height),
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            flags.ladder_preset.clone(),
            "-tune".into(),
            "zerolatency".into(),
            "-profile:v".into(),
            "main".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
            "-force_key_frames".into(),
            "source".into(),
            "-sc_threshold".into(),
            "0".into(),
            "-b:v".into(),
            format!("{kbps}k"),
            "-maxrate".into(),
            format!("{}k", kbps + kbps / 10),
            "-bufsize".into(),
            format!("{}k", kbps * 2),
            "-c:a".into(),
            "copy".into(),
            "-f".into(),
            "flv".into(),
            format!("{target}/{stream}@{}?ladder={secret}", rung.name()),
        ]);
    }
    Some(args)
}

/// The publish's side of its ladder: copies media to the supervisor without waiting.
pub(crate) struct LadderFeed {
    queue: mpsc::Sender<MediaMessage>,
    /// The queue overflowed: media is dropped up to the next video keyframe.
    resync: bool,
    shared: Arc<Shared>,
}

impl LadderFeed {
    /// Starts the ladder of a publish of `stream` (not of a rendition) when `--ladder` is on.
    pub fn start(shared: &Arc<Shared>, stream: &str) -> Option<Self> {
        let flags = &shared.config.ladder;
        if !flags.enabled() || stream.contains(livecast_media::publish::RENDITION_SEPARATOR) {
            return None;
        }
        let target = shared.ladder_target()?;
        let (queue, messages) = mpsc::channel(QUEUE);
        let supervisor = Supervisor {
            shared: shared.clone(),
            stream: stream.to_string(),
            target,
            messages,
            video_header: None,
            audio_header: None,
        };
        let span = tracing::info_span!("ladder", stream = %stream);
        tokio::spawn(supervisor.run().instrument(span));
        Some(Self {
            queue,
            resync: false,
            shared: shared.clone(),
        })
    }

    /// Copies one message to the ladder, or drops it when the ladder is behind.
    pub fn push(&mut self, message: &MediaMessage) {
        if self.resync {
            match message {
                MediaMessage::Video(_, body) if is_keyframe(body) || is_header(body) => {}
                _ => {
                    self.shared.metrics.ladder_dropped.inc();
                    return;
                }
            }
        }
        let copy = match message {
            MediaMessage::Video(ts, body) => MediaMessage::Video(*ts, body.clone()),
            MediaMessage::Audio(ts, body) => MediaMessage::Audio(*ts, body.clone()),
        };
        match self.queue.try_send(copy) {
            Ok(()) => {
                if let MediaMessage::Video(_, body) = message {
                    if is_keyframe(body) {
                        self.resync = false;
                    }
                }
            }
            Err(_) => {
                self.shared.metrics.ladder_dropped.inc();
                self.resync = true;
            }
        }
    }
}

fn is_keyframe(body: &Bytes) -> bool {
    matches!(
        flv::parse_video(body),
        Ok(VideoTag::Frame { keyframe: true, .. })
    )
}

fn is_sequence_header(kind: u8, body: &Bytes) -> bool {
    if kind == 9 {
        is_header(body)
    } else {
        matches!(
            flv::parse_audio(body),
            Ok(flv::AudioTag::AacSequenceHeader(_))
        )
    }
}

fn is_header(body: &Bytes) -> bool {
    matches!(flv::parse_video(body), Ok(VideoTag::SequenceHeader { .. }))
}

/// Runs and restarts one publish's child, and feeds it.
struct Supervisor {
    shared: Arc<Shared>,
    stream: String,
    /// rtmp://HOST:PORT/live of this ingest.
    target: String,
    messages: mpsc::Receiver<MediaMessage>,
    /// The latest sequence headers, sent first to every child.
    video_header: Option<(u32, Bytes)>,
    audio_header: Option<(u32, Bytes)>,
}

/// How a child's run ended.
enum Ended {
    /// The publish ended.
    Publish,
    /// The child exited or could not be fed.
    Child(String),
}

impl Supervisor {
    async fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        let mut logged_spawn_error = false;
        loop {
            // The source's height decides the rungs; it comes with the video sequence header.
            let Some(height) = self.wait_for_header().await else {
                return;
            };
            let secret = self.shared.ladder_secret.clone();
            let Some(args) = ffmpeg_args(
                &self.shared.config.ladder,
                &self.stream,
                height,
                &self.target,
                &secret,
            ) else {
                tracing::info!(
                    source_height = height,
                    "no rung of the ladder is shorter than the source; not transcoding"
                );
                self.drain().await;
                return;
            };
            let spawned = Command::new(&self.shared.config.ladder.ladder_ffmpeg)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    self.shared
                        .metrics
                        .ladder_failures
                        .with_label_values(&["spawn"])
                        .inc();
                    if !logged_spawn_error {
                        logged_spawn_error = true;
                        tracing::error!(%error, ffmpeg = %self.shared.config.ladder.ladder_ffmpeg.display(), "cannot start the ladder's ffmpeg: the stream runs at its source rendition only");
                    }
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            logged_spawn_error = false;
            tracing::info!(pid = child.id(), source_height = height, "ladder started");
            let started = Instant::now();
            self.shared.metrics.ladder_processes.inc();
            let ended = self.feed(&mut child).await;
            self.shared.metrics.ladder_processes.dec();
            match ended {
                Ended::Publish => {
                    stop(child, &self.shared).await;
                    return;
                }
                Ended::Child(why) => {
                    self.shared
                        .metrics
                        .ladder_failures
                        .with_label_values(&["exit"])
                        .inc();
                    tracing::warn!(why, "the ladder's ffmpeg stopped; restarting it");
                    let _ = child.kill().await;
                    if started.elapsed() >= RAN_LONG_ENOUGH {
                        backoff = BACKOFF_FIRST;
                    }
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    self.shared.metrics.ladder_restarts.inc();
                }
            }
        }
    }

    /// Keeps the headers current until a video sequence header with a picture size is in;
    /// its height. `None` when the publish ended first.
    async fn wait_for_header(&mut self) -> Option<u32> {
        loop {
            if let Some(height) = self
                .video_header
                .as_ref()
                .and_then(|(_, b)| header_height(b))
            {
                return Some(height);
            }
            let message = self.messages.recv().await?;
            self.note(&message);
        }
    }

    /// Waits `delay` while keeping the headers current; false when the publish ended.
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                message = self.messages.recv() => match message {
                    Some(message) => self.note(&message),
                    None => return false,
                },
            }
        }
    }

    /// Takes messages until the publish ends (no child runs).
    async fn drain(&mut self) {
        while self.messages.recv().await.is_some() {}
    }

    /// Remembers a sequence header.
    fn note(&mut self, message: &MediaMessage) {
        match message {
            MediaMessage::Video(ts, body) if is_header(body) => {
                self.video_header = Some((*ts, body.clone()));
            }
            MediaMessage::Audio(ts, body) if is_sequence_header(8, body) => {
                self.audio_header = Some((*ts, body.clone()));
            }
            _ => {}
        }
    }

    /// Feeds `child` until it or the publish ends.
    async fn feed(&mut self, child: &mut Child) -> Ended {
        let Some(mut stdin) = child.stdin.take() else {
            return Ended::Child("no stdin".into());
        };
        let last_line = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let last_line = last_line.clone();
            tokio::spawn(
                async move {
                    let mut lines = BufReader::new(stderr).lines();
                    let mut logged = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if logged < STDERR_LINES {
                            logged += 1;
                            tracing::warn!(ffmpeg = %line, "ladder");
                        }
                        if let Ok(mut last) = last_line.lock() {
                            *last = line;
                        }
                    }
                }
                .in_current_span(),
            );
        }
        // Audio is announced whether or not its header is in yet: it may follow.
        let mut start = flv_header(true);
        for (kind, (ts, body)) in [(9, &self.video_header), (8, &self.audio_header)]
            .into_iter()
            .filter_map(|(kind, header)| Some((kind, header.as_ref()?)))
        {
            flv_tag(&mut start, kind, *ts, body);
        }
        if let Err(error) = stdin.write_all(&start).await {
            return Ended::Child(format!("cannot write to its stdin: {error}"));
        }
        let mut cpu = CpuClock::new(child.id());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut keyframe_seen = false;
        let mut tag = Vec::with_capacity(64 * 1024);
        loop {
            tokio::select! {
                message = self.messages.recv() => {
                    let Some(message) = message else {
                        cpu.sample(&self.shared);
                        drop(stdin);
                        return Ended::Publish;
                    };
                    self.note(&message);
                    let (kind, ts, body) = match &message {
                        MediaMessage::Video(ts, body) => (9, *ts, body),
                        MediaMessage::Audio(ts, body) => (8, *ts, body),
                    };
                    // A child starts at a keyframe; frames before it cannot be decoded. Sequence
                    // headers go through: the audio one may come after the child started.
                    if !keyframe_seen {
                        if kind == 9 && is_keyframe(body) {
                            keyframe_seen = true;
                        } else if !is_sequence_header(kind, body) {
                            continue;
                        }
                    }
                    tag.clear();
                    flv_tag(&mut tag, kind, ts, body);
                    if let Err(error) = write_to(&mut stdin, &tag).await {
                        let last = last_line.lock().map(|l| l.clone()).unwrap_or_default();
                        return Ended::Child(format!("{error}; its last words: {last}"));
                    }
                }
                status = child.wait() => {
                    cpu.sample(&self.shared);
                    let last = last_line.lock().map(|l| l.clone()).unwrap_or_default();
                    return Ended::Child(match status {
                        Ok(status) => format!("{status}; its last words: {last}"),
                        Err(error) => error.to_string(),
                    });
                }
                _ = tick.tick() => cpu.sample(&self.shared),
            }
        }
    }
}

/// Writes to the child, giving up when it has not taken a tag for long (a stuck child).
async fn write_to(stdin: &mut ChildStdin, data: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(Duration::from_secs(10), stdin.write_all(data)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other("it took nothing for 10 s")),
    }
}

/// Lets a child whose publish ended finish, then kills it.
async fn stop(mut child: Child, shared: &Shared) {
    let mut cpu = CpuClock::new(child.id());
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => tracing::info!("ladder stopped with its publish"),
        Err(_) => {
            cpu.sample(shared);
            let _ = child.kill().await;
            tracing::warn!("the ladder's ffmpeg did not stop with its publish; killed");
        }
    }
}

/// The picture height of a video sequence header.
fn header_height(body: &Bytes) -> Option<u32> {
    let VideoTag::SequenceHeader { codec, record } = flv::parse_video(body).ok()? else {
        return None;
    };
    let (_, height) = match codec {
        flv::VideoCodec::Avc => {
            let config = livecast_media::avc::AvcConfig::parse(record).ok()?;
            livecast_media::avc::sps_dimensions(config.sps.first()?).ok()?
        }
        flv::VideoCodec::Hevc => {
            let config = livecast_media::hevc::HevcConfig::parse(record).ok()?;
            livecast_media::hevc::sps_dimensions(config.sps.first()?).ok()?
        }
        flv::VideoCodec::Av1 => {
            let config = livecast_media::av1::Av1Config::parse(record).ok()?;
            (config.width, config.height)
        }
    };
    (height > 0).then_some(height)
}

/// An FLV file header (version 1, video, and audio if `audio`) and the first PreviousTagSize.
fn flv_header(audio: bool) -> Vec<u8> {
    let flags = 0x01 | if audio { 0x04 } else { 0 };
    vec![b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends one FLV tag (`kind` 8 audio, 9 video) and its PreviousTagSize.
fn flv_tag(out: &mut Vec<u8>, kind: u8, ts: u32, body: &[u8]) {
    let size = body.len() as u32;
    out.push(kind);
    out.extend_from_slice(&size.to_be_bytes()[1..]);
    out.extend_from_slice(&ts.to_be_bytes()[1..]);
    out.push((ts >> 24) as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

/// A child's CPU time from `/proc/<pid>/stat`, added to the metric as it grows.
struct CpuClock {
    pid: Option<u32>,
    counted: f64,
}

impl CpuClock {
    fn new(pid: Option<u32>) -> Self {
        Self { pid, counted: 0.0 }
    }

    fn sample(&mut self, shared: &Shared) {
        let Some(seconds) = self.pid.and_then(cpu_seconds) else {
            return;
        };
        if seconds > self.counted {
            shared.metrics.ladder_cpu.inc_by(seconds - self.counted);
            self.counted = seconds;
        }
    }
}

/// User plus system CPU seconds of process `pid`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// rtmp://HOST:PORT/live for a listener bound to `addr`: an unspecified address is reached
/// over loopback.
pub(crate) fn target_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "rtmp://{}/{}",
        SocketAddr::new(ip, addr.port()),
        crate::connection::APP
    )
}

/// A secret for the ladder's own publishes, from the kernel's random source.
pub(crate) fn new_secret() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_parse_and_bad_ones_say_why() {
        let ladder: Ladder = DEFAULT_LADDER.parse().unwrap();
        assert_eq!(
            ladder.0,
            [
                Rung {
                    height: 480,
                    kbps: 1200
                },
                Rung {
                    height: 240,
                    kbps: 400
                }
            ]
        );
        let ladder: Ladder = "240p:400k, 720p:2500k".parse().unwrap();
        assert_eq!(ladder.0[0].height, 720, "tallest first");
        for (bad, why) in [
            ("480", "HEIGHT:KBPS"),
            ("x:1", "height"),
            ("481:100", "even"),
            ("480:1", "bit rate"),
            ("480:100,480:200", "two rungs"),
        ] {
            let error = bad.parse::<Ladder>().unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn the_command_line_keeps_timestamps_and_keyframes_and_skips_tall_rungs() {
        let flags = LadderFlags {
            ladder: Some(DEFAULT_LADDER.parse().unwrap()),
            ladder_ffmpeg: "ffmpeg".into(),
            ladder_preset: "veryfast".into(),
        };
        let args =
            ffmpeg_args(&flags, "talk", 720, "rtmp://127.0.0.1:1935/live", "s3cret").unwrap();
        let line = args.join(" ");
        for wanted in [
            "-copyts -f flv -i pipe:0",
            "-force_key_frames source",
            "-tune zerolatency",
            "-c:a copy",
            "scale=-2:480",
            "-b:v 1200k -maxrate 1320k -bufsize 2400k",
            "rtmp://127.0.0.1:1935/live/talk@480p?ladder=s3cret",
            "rtmp://127.0.0.1:1935/live/talk@240p?ladder=s3cret",
        ] {
            assert!(line.contains(wanted), "{wanted} in {line}");
        }
        let args = ffmpeg_args(&flags, "talk", 480, "rtmp://h/live", "s").unwrap();
        assert!(
            !args.join(" ").contains("talk@480p"),
            "no rung as tall as the source"
        );
        assert_eq!(ffmpeg_args(&flags, "talk", 240, "rtmp://h/live", "s"), None);
    }

    #[test]
    fn flv_tags_carry_the_full_timestamp() {
        let mut out = Vec::new();
        flv_tag(&mut out, 9, 0x1234_5678, &[1, 2, 3]);
        assert_eq!(
            out,
            [9, 0, 0, 3, 0x34, 0x56, 0x78, 0x12, 0, 0, 0, 1, 2, 3, 0, 0, 0, 14]
        );
        assert_eq!(&flv_header(true)[..5], b"FLV\x01\x05");
    }

    #[test]
    fn targets_reach_an_unspecified_address_over_loopback() {
        assert_eq!(
            target_for("0.0.0.0:1935".parse().unwrap()),
            "rtmp://127.0.0.1:1935/live"
        );
        assert_eq!(
            target_for("[::]:19".parse().unwrap()),
            "rtmp://[::1]:19/live"
        );
        assert_eq!(
            target_for("10.0.0.5:1935".parse().unwrap()),
            "rtmp://10.0.0.5:1935/live"
        );
        assert_eq!(new_secret().unwrap().len(), 32);
    }

    #[test]
    fn cpu_time_of_this_process_is_read() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
