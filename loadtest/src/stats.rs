//! What viewers record: the events they send to the collector (one per request, startup,
//! latency sample, stall and variant switch), what each viewer keeps itself (its playback
//! clock's totals and the honesty counters), and the live counters of the progress line.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

/// The kinds of request a viewer makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Master,
    Playlist,
    BlockingReload,
    Init,
    Segment,
    Part,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Master,
        Kind::Playlist,
        Kind::BlockingReload,
        Kind::Init,
        Kind::Segment,
        Kind::Part,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Playlist => "playlist",
            Kind::BlockingReload => "blocking_reload",
            Kind::Init => "init",
            Kind::Segment => "segment",
            Kind::Part => "part",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One request as the collector gets it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub viewer: u32,
    pub kind: Kind,
    pub url: String,
    /// Milliseconds since the run started, when the request was sent.
    pub sent_ms: f64,
    /// Time to the response head and to its last byte, in milliseconds (`None` on failure).
    pub first_ms: Option<f64>,
    pub last_ms: Option<f64>,
    /// The HTTP status (0 when there was no answer).
    pub status: u16,
    pub bytes: u64,
    /// Why it failed: the status code or a transport failure (`connect`, `timeout`, ...).
    pub error: Option<String>,
    /// The front-end that answered (its `livecast-replica` header), when it said.
    pub replica: Option<Arc<str>>,
    /// Sent early, for the preload-hinted part.
    pub hinted: bool,
}

/// What viewers tell the collector.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Request(Request),
    /// Join to first media, in milliseconds.
    Startup(f64),
    /// Now minus PROGRAM-DATE-TIME at the playhead, and the distance from the playhead to the
    /// live edge the playlist lists, in seconds.
    Latency {
        latency: f64,
        edge: f64,
    },
    /// A wait for media of at least 250 ms.
    Stall,
    /// A variant switch.
    Switch,
}

/// The sending side viewers hold.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    tx: UnboundedSender<Event>,
    started: Instant,
}

impl Recorder {
    pub fn new(tx: UnboundedSender<Event>, started: Instant) -> Self {
        Self { tx, started }
    }

    pub fn send(&self, event: Event) {
        // The collector outlives every viewer; a closed channel means the run is over.
        let _ = self.tx.send(event);
    }

    /// Milliseconds since the run started.
    pub fn since_start_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }
}

/// One viewer's own totals.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ViewerStats {
    pub started: bool,
    /// Waits for media of at least 250 ms, and their time.
    pub stalls: u64,
    pub stalled_secs: f64,
    /// Shorter waits (media a few frames late), and their time.
    pub short_waits: u64,
    pub short_wait_secs: f64,
    /// Wall-clock time spent playing, and the media time played (more when catching up).
    pub played_secs: f64,
    pub played_media_secs: f64,
    /// Media seconds downloaded, every download counted.
    pub media_downloaded_secs: f64,
    /// Media seconds the playback clock accounts for: played, still buffered at the end,
    /// decoded but not shown (on the way to a start point), minus EXT-X-GAP media played
    /// without a download. Equal to the downloaded media unless something was fetched twice.
    pub media_accounted_secs: f64,
    /// Media units (segments or parts) downloaded again, and their media seconds.
    pub duplicate_downloads: u64,
    /// Segments skipped over (a sequence number never fetched between two fetched ones).
    pub skipped_segments: u64,
    pub switches_up: u64,
    pub switches_down: u64,
    /// Media bytes (segments and parts) and the variant's declared BANDWIDTH × media seconds.
    pub media_bytes: u64,
    pub declared_bits: f64,
}
