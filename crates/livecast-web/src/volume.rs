//! The front-end's in-memory view of the HLS volume.
//!
//! Playlists are parsed once per change and kept with their gzip form; segments are kept in a
//! bounded cache. File-system events (notify: inotify on Linux, a polling watcher where that is
//! not available, as on some network volumes) keep both coherent: a changed playlist is re-read
//! and every request waiting on it (LL-HLS blocking reload) is woken; a changed or removed
//! file leaves the cache. A thousand viewers of one stream therefore cost one disk read per
//! file, not a thousand.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use livecast_media::playlist::MediaPlaylist;
use livecast_telemetry::CancellationToken;
use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::zerocopy;

pub(crate) use livecast_media::playlist::PLAYLIST_NAME as PLAYLIST;
/// Files larger than this are served from disk without caching.
const MAX_CACHED_FILE: usize = 16 * 1024 * 1024;
/// Polling interval when the platform gives no file-system events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A playlist as last read from the volume.
#[derive(Debug)]
pub(crate) struct PlaylistEntry {
    /// The parsed model, when the text is a media playlist this front-end understands.
    pub model: Option<MediaPlaylist>,
    pub body: Bytes,
    pub gzip: Bytes,
    pub etag: String,
    pub modified: SystemTime,
}

/// A file's bytes with its validators.
#[derive(Debug)]
pub(crate) struct CachedFile {
    pub body: Bytes,
    pub etag: String,
    pub modified: SystemTime,
    /// Only the start of a file still being written.
    pub partial: bool,
    /// Kept a second time in a twin file for `sendfile` (see `zerocopy`).
    pub twinned: bool,
}

impl CachedFile {
    /// Memory the cache spends on this file.
    fn memory(&self) -> usize {
        self.body.len() * if self.twinned { 2 } else { 1 }
    }
}

/// Per-stream state that requests wait on.
#[derive(Debug)]
pub(crate) struct StreamView {
    pub playlist: watch::Sender<Option<Arc<PlaylistEntry>>>,
    /// Bumped on every file event in the stream's directory (new parts and segments).
    pub changes: watch::Sender<u64>,
    /// Set once the first load of the playlist is over: requests that come while it runs wait
    /// for it instead of finding no playlist yet.
    loaded: tokio::sync::OnceCell<()>,
    /// Held while a request makes the view catch up ([`Volume::catch_up`]), so that requests
    /// which come at once share one read.
    catching_up: tokio::sync::Mutex<()>,
}

/// A read of one file (or of one prefix of it) in progress, shared by every request that
/// misses the cache meanwhile, so a burst of first requests reads the file once.
type Flight = Arc<tokio::sync::OnceCell<Result<Option<Arc<CachedFile>>, ReadError>>>;

/// A failed read, kept so that every request sharing it gets the same error.
#[derive(Debug, Clone)]
struct ReadError {
    kind: std::io::ErrorKind,
    message: String,
}

impl From<ReadError> for std::io::Error {
    fn from(e: ReadError) -> Self {
        std::io::Error::new(e.kind, e.message)
    }
}

#[derive(Debug, Default)]
struct FileCache {
    map: HashMap<PathBuf, Arc<CachedFile>>,
    order: VecDeque<PathBuf>,
    bytes: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Volume {
    root: PathBuf,
    streams: Mutex<HashMap<String, Arc<StreamView>>>,
    files: Mutex<FileCache>,
    /// Reads in progress, by path and prefix length (`None`: the whole file).
    flights: Mutex<HashMap<(PathBuf, Option<u64>), Flight>>,
    /// Changes applied so far, to tell whether one came while a file was being read.
    events: AtomicU64,
    cache_cap: usize,
    metrics: Metrics,
}

impl Volume {
    pub fn new(root: PathBuf, cache_cap: usize, metrics: Metrics) -> Arc<Self> {
        // Event paths are matched against the root: with a relative root (`./data/hls`) the
        // watcher's paths for directories created later do not match it, and those streams
        // would never be refreshed. An absolute root matches every event path.
        let root = std::path::absolute(&root).unwrap_or(root);
        Arc::new(Self {
            root,
            streams: Mutex::new(HashMap::new()),
            files: Mutex::new(FileCache::default()),
            flights: Mutex::new(HashMap::new()),
            events: AtomicU64::new(0),
            cache_cap,
            metrics,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The view of `stream`, created (and its playlist loaded) on first use. Requests that
    /// come while the first load runs wait for it: on a front-end that has just started, a
    /// burst of viewers of one stream must all find its playlist, not only the first.
    pub async fn stream(&self, stream: &str) -> Arc<StreamView> {
        let view = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(stream.to_string())
            .or_insert_with(|| {
                Arc::new(StreamView {
                    playlist: watch::channel(None).0,
                    changes: watch::channel(0).0,
                    loaded: tokio::sync::OnceCell::new(),
                    catching_up: tokio::sync::Mutex::new(()),
                })
            })
            .clone();
        view.loaded
            .get_or_init(|| self.reload_playlist(stream, &view))
            .await;
        view
    }

    /// Reads `stream`'s playlist again now, unless the view has moved on from `seen`
    /// meanwhile. For a request that names what this view does not list yet: front-ends
    /// share the volume but each applies its events in its own time, so a viewer can get a
    /// playlist from one front-end and ask another, whose watcher has not run yet, for what
    /// that playlist lists or hints.
    pub async fn catch_up(&self, stream: &str, view: &StreamView, seen: &Arc<PlaylistEntry>) {
        let _one = view.catching_up.lock().await;
        let unchanged = view
            .playlist
            .borrow()
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, seen));
        if unchanged {
            self.reload_playlist(stream, view).await;
        }
    }

    async fn reload_playlist(&self, stream: &str, view: &StreamView) {
        let path = self.root.join(stream).join(PLAYLIST);
        let loaded = tokio::task::spawn_blocking(move || load_playlist(&path))
            .await
            .ok()
            .flatten()
            .map(Arc::new);
        view.playlist
            .send_if_modified(|current| match (&loaded, current.as_ref()) {
                // Two loads can race (a first request and an event); never go back in time.
                (Some(new), Some(old)) if new.modified < old.modified => false,
                (None, None) => false,
                _ => {
                    *current = loaded.clone();
                    true
                }
            });
    }

    /// A file of a stream, from the cache or read (and cached) now. `None` when it does not exist.
    pub async fn file(&self, stream: &str, file: &str) -> std::io::Result<Option<Arc<CachedFile>>> {
        self.read(stream, file, None).await
    }

    /// The first `len` bytes of a file that is still being written (the segment byte-range
    /// parts are appended to): what is past them may be anything, so only they are read and
    /// cached. A cached prefix serves any shorter one; a longer one is read again. The result
    /// is shorter than `len` only if the file is.
    pub async fn prefix(
        &self,
        stream: &str,
        file: &str,
        len: u64,
    ) -> std::io::Result<Option<Arc<CachedFile>>> {
        self.read(stream, file, Some(len)).await
    }

    async fn read(
        &self,
        stream: &str,
        file: &str,
        prefix: Option<u64>,
    ) -> std::io::Result<Option<Arc<CachedFile>>> {
        let path = self.root.join(stream).join(file);
        if let Some(hit) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .get(&path)
            .filter(|hit| match prefix {
                None => !hit.partial,
                Some(len) => hit.body.len() as u64 >= len,
            })
        {
            self.metrics.cache.with_label_values(&["hit"]).inc();
            return Ok(Some(hit.clone()));
        }
        let key = (path.clone(), prefix);
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let mut joined = true;
        let result = flight
            .get_or_init(|| {
                joined = false;
                self.load(path, prefix)
            })
            .await
            .clone();
        // The read is over: later misses (the copy was not cacheable, or was evicted) read anew.
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&key);
            }
        }
        if joined {
            self.metrics.cache.with_label_values(&["hit"]).inc();
        }
        Ok(result?)
    }

    /// Reads a file (or its first `prefix` bytes) from the volume and caches it.
    async fn load(
        &self,
        path: PathBuf,
        prefix: Option<u64>,
    ) -> Result<Option<Arc<CachedFile>>, ReadError> {
        self.metrics.cache.with_label_values(&["miss"]).inc();
        // A change seen while the file is read may have come after the read: then the copy
        // is not cached, since the event that would evict it has already gone by.
        let events = self.events.load(Ordering::Acquire);
        let read_path = path.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<CachedFile>> {
            let modified = match std::fs::metadata(&read_path) {
                Ok(meta) => meta.modified()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let body = match prefix {
                None => std::fs::read(&read_path),
                Some(len) => read_prefix(&read_path, len),
            };
            match body {
                Ok(body) => {
                    let etag = file_etag(body.len(), modified);
                    // A whole large file gets a twin file to be sent from without a copy.
                    let (body, twinned) = if prefix.is_none()
                        && (zerocopy::MIN_LEN..=MAX_CACHED_FILE).contains(&body.len())
                    {
                        zerocopy::twinned(body)
                    } else {
                        (Bytes::from(body), false)
                    };
                    Ok(Some(CachedFile {
                        etag,
                        body,
                        modified,
                        partial: prefix.is_some(),
                        twinned,
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| ReadError {
            kind: e.kind(),
            message: e.to_string(),
        })?;
        let Some(file) = read else { return Ok(None) };
        let file = Arc::new(file);
        if file.body.len() <= MAX_CACHED_FILE && self.events.load(Ordering::Acquire) == events {
            self.insert(path, file.clone());
        }
        Ok(Some(file))
    }

    fn insert(&self, path: PathBuf, file: Arc<CachedFile>) {
        let mut cache = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cache.map.insert(path.clone(), file.clone()) {
            cache.bytes -= old.memory();
        } else {
            cache.order.push_back(path);
        }
        cache.bytes += file.memory();
        // Live traffic reads the newest files; evict the oldest inserted first.
        while cache.bytes > self.cache_cap {
            let Some(oldest) = cache.order.pop_front() else {
                break;
            };
            if let Some(old) = cache.map.remove(&oldest) {
                cache.bytes -= old.memory();
            }
        }
        self.metrics.cache_bytes.set(cache.bytes as i64);
    }

    fn forget(&self, path: &Path) {
        let mut cache = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cache.map.remove(path) {
            cache.bytes -= old.memory();
            cache.order.retain(|p| p != path);
            self.metrics.cache_bytes.set(cache.bytes as i64);
        }
    }

    /// Applies one file-system event path.
    async fn on_path(&self, path: &Path) {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return;
        };
        let mut parts = rel.iter().filter_map(|p| p.to_str());
        let (Some(stream), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        if file.starts_with('.') {
            return; // the ingest's temp files
        }
        self.events.fetch_add(1, Ordering::AcqRel);
        self.forget(path);
        let view = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned();
        let view = match view {
            Some(view) => {
                if file == PLAYLIST {
                    self.reload_playlist(stream, &view).await;
                }
                view
            }
            // An unseen stream's playlist changed: load it now so no change is missed.
            None if file == PLAYLIST => self.stream(stream).await,
            None => return,
        };
        view.changes.send_modify(|n| *n += 1);
    }

    /// Watches the volume until `shutdown`, applying every event. Retries until the volume
    /// exists (it may be mounted after the front-end starts). `started` fires once the first
    /// attempt is over, so the server can wait for the watch before taking requests.
    pub async fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
        started: tokio::sync::oneshot::Sender<()>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
        let mut started = Some(started);
        let watcher = loop {
            let attempt = start_watcher(&self.root, tx.clone());
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
            match attempt {
                Ok(w) => break w,
                Err(error) => {
                    tracing::debug!(%error, dir = %self.root.display(), "cannot watch the volume yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // Everything read before the watch began may be stale.
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .clear();
        let known: Vec<(String, Arc<StreamView>)> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (stream, view) in known {
            self.reload_playlist(&stream, &view).await;
        }
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = rx.recv() => event,
            };
            match event {
                // Reads (our own included) raise access events; only changes matter.
                Some(Ok(event)) if matches!(event.kind, notify::EventKind::Access(_)) => {}
                Some(Ok(event)) => {
                    for path in &event.paths {
                        self.on_path(path).await;
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "file-system watch error"),
                None => break,
            }
        }
        drop(watcher);
    }
}

/// The platform watcher, or a polling one where the platform has none.
fn start_watcher(
    root: &Path,
    tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
) -> notify::Result<Box<dyn notify::Watcher + Send>> {
    if !root.is_dir() {
        return Err(notify::Error::path_not_found().add_path(root.to_path_buf()));
    }
    let forward = tx.clone();
    let native = notify::recommended_watcher(move |event| {
        let _ = forward.send(event);
    })
    .and_then(|mut w| w.watch(root, notify::RecursiveMode::Recursive).map(|()| w));
    match native {
        Ok(w) => Ok(Box::new(w)),
        Err(error) => {
            tracing::warn!(%error, "no file-system events; polling the volume instead");
            let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
            let mut poll = notify::PollWatcher::new(
                move |event| {
                    let _ = tx.send(event);
                },
                config,
            )?;
            poll.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(Box::new(poll))
        }
    }
}

/// Up to `len` bytes from the start of the file at `path`.
fn read_prefix(path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut body = Vec::with_capacity(len.min(MAX_CACHED_FILE as u64) as usize);
    std::fs::File::open(path)?
        .take(len)
        .read_to_end(&mut body)?;
    Ok(body)
}

fn load_playlist(path: &Path) -> Option<PlaylistEntry> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let body = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&body);
    let model = MediaPlaylist::parse(&text).ok();
    Some(entry_for(body.into(), model, modified))
}

/// Builds a servable playlist: body, gzip form and a content hash as ETag.
pub(crate) fn entry_for(
    body: Bytes,
    model: Option<MediaPlaylist>,
    modified: SystemTime,
) -> PlaylistEntry {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::fast(),
    );
    let gzip = gz
        .write_all(&body)
        .and_then(|()| gz.finish())
        .map(Bytes::from)
        .unwrap_or_default();
    PlaylistEntry {
        etag: format!("\"{:016x}\"", fnv1a(&body)),
        model,
        body,
        gzip,
        modified,
    }
}

fn file_etag(len: usize, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("\"{len:x}-{nanos:x}\"")
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
