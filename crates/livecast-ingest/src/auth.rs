//! Publish authentication: a stream-keys file and an `on_publish`-style HTTP callback.
//!
//! The secret travels as a query on the stream name (`rtmp://HOST/live/cam?key=SECRET`, or in
//! OBS the stream key `cam?key=SECRET`). The keys file has one `<stream> <secret>` pair per line
//! (`#` starts a comment; the stream `*` matches any name) and is read again whenever its
//! modification time or size changes. The callback gets a form POST like nginx-rtmp's
//! `on_publish` (`call=publish&app=live&name=…&addr=…` plus the query's own pairs, the key
//! included); a 2xx answer allows the publish, anything else refuses it. When both are set both
//! must allow. The secret is never logged and never becomes part of a path.
//!
//! Before any of that, the publisher's address must be in the publish allow-list (loopback
//! only when neither keys nor a callback are configured), and an address that failed too many
//! checks lately is refused without being checked (key guessing).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use livecast_telemetry::Cidr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::IngestError;

/// How long the callback may take before the publish is refused.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish was refused; the reason becomes a metric label and a log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The publisher's address is outside the publish allow-list.
    Address,
    /// The address failed too many checks lately.
    RateLimited,
    /// No key, or not the stream's key.
    BadKey,
    /// The callback answered something other than 2xx, or could not be reached.
    Callback,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Address => "address_not_allowed",
            Denied::RateLimited => "rate_limited",
            Denied::BadKey => "bad_key",
            Denied::Callback => "callback_refused",
        }
    }
}

/// Loopback, the publish allow-list when nothing else guards publishing.
pub(crate) const LOOPBACK: &str = "127.0.0.0/8,::1/128,::ffff:127.0.0.0/104";

/// The checks a publish must pass.
#[derive(Debug)]
pub(crate) struct Auth {
    /// Addresses publishers may come from; `None` allows any.
    allow: Option<Vec<Cidr>>,
    keys: Option<KeysFile>,
    callback: Option<Callback>,
    failures: Failures,
}

impl Auth {
    /// `allow` is the configured allow-list; empty means loopback only when neither `keys`
    /// nor `callback` is set, and any address otherwise (the secret is then the guard).
    pub fn new(
        allow: &[Cidr],
        keys: Option<&Path>,
        callback: Option<&str>,
        limit: FailureLimit,
    ) -> Result<Self, IngestError> {
        let keys = keys.map(KeysFile::open).transpose()?;
        let callback = callback.map(Callback::new).transpose()?;
        let allow = if !allow.is_empty() {
            Some(allow.to_vec())
        } else if keys.is_none() && callback.is_none() {
            Some(Cidr::parse_list(LOOPBACK).map_err(IngestError::Config)?)
        } else {
            None
        };
        Ok(Self {
            allow,
            keys,
            callback,
            failures: Failures::new(limit),
        })
    }

    /// One line for the start log: what a publisher needs to be let in.
    pub fn describe(&self) -> String {
        let secret = match (&self.keys, &self.callback) {
            (Some(_), Some(_)) => "a stream key and the on_publish callback's consent",
            (Some(_), None) => "a stream key",
            (None, Some(_)) => "the on_publish callback's consent",
            (None, None) => "",
        };
        let from = match &self.allow {
            None => "any address".to_string(),
            Some(list) => list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        if secret.is_empty() {
            format!("publishing is open to {from} only (no stream keys or on_publish callback; widen with --publish-allow-cidr)")
        } else {
            format!("publishing needs {secret}, from {from}")
        }
    }

    /// Checks a publish of `name` with the query `query` (what followed `?`) from `peer`.
    pub async fn check(&self, name: &str, query: &str, peer: SocketAddr) -> Result<(), Denied> {
        if let Some(allow) = &self.allow {
            if !livecast_telemetry::any_contains(allow, peer.ip()) {
                return Err(Denied::Address);
            }
        }
        if self.failures.blocked(peer.ip()) {
            return Err(Denied::RateLimited);
        }
        let result = self.check_secret(name, query, peer).await;
        match result {
            Ok(()) => self.failures.forget(peer.ip()),
            Err(_) => self.failures.record(peer.ip()),
        }
        result
    }

    async fn check_secret(&self, name: &str, query: &str, peer: SocketAddr) -> Result<(), Denied> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some(keys) = &self.keys {
            let key = pairs
                .iter()
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.as_str());
            keys.check(name, key.unwrap_or_default())?;
        }
        if let Some(callback) = &self.callback {
            callback.check(name, &pairs, peer).await?;
        }
        Ok(())
    }
}

/// How many failed checks an address may have within a window before it is refused unchecked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureLimit {
    /// Failures allowed within `window`; 0 turns the limit off.
    pub max: usize,
    pub window: Duration,
}

/// Addresses tracked at most; beyond this the ones whose last failure is oldest are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Recent failed checks per address.
#[derive(Debug)]
struct Failures {
    limit: FailureLimit,
    recent: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Failures {
    fn new(limit: FailureLimit) -> Self {
        Self {
            limit,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` has used up its failures within the window. A refusal for this reason is
    /// not a failure of its own, so the address is let in again one window after its last
    /// real failure.
    fn blocked(&self, ip: IpAddr) -> bool {
        if self.limit.max == 0 {
            return false;
        }
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let Some(times) = recent.get_mut(&ip) else {
            return false;
        };
        let window = self.limit.window;
        while times.front().is_some_and(|t| t.elapsed() >= window) {
            times.pop_front();
        }
        if times.is_empty() {
            recent.remove(&ip);
            return false;
        }
        times.len() >= self.limit.max
    }

    /// A check passed: the address's earlier failures were a mistake put right.
    fn forget(&self, ip: IpAddr) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.remove(&ip);
        }
    }

    fn record(&self, ip: IpAddr) {
        if self.limit.max == 0 {
            return;
        }
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        if recent.len() >= MAX_TRACKED && !recent.contains_key(&ip) {
            let window = self.limit.window;
            recent.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < window));
            if recent.len() >= MAX_TRACKED {
                if let Some(oldest) = recent
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(ip, _)| *ip)
                {
                    recent.remove(&oldest);
                }
            }
        }
        let times = recent.entry(ip).or_default();
        times.push_back(Instant::now());
        while times.len() > self.limit.max {
            times.pop_front();
        }
    }
}

#[derive(Debug)]
struct KeysFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// Modification time and size of the file the keys were read from.
    version: Option<(SystemTime, u64)>,
    keys: HashMap<String, String>,
}

impl KeysFile {
    fn open(path: &Path) -> Result<Self, IngestError> {
        let file = Self {
            path: path.to_path_buf(),
            state: Mutex::new(Loaded::default()),
        };
        // A broken file at start is a configuration error, not a silent "refuse everyone".
        let loaded = file
            .load()
            .map_err(|e| IngestError::Config(format!("--stream-keys {}: {e}", path.display())))?;
        if let Ok(mut state) = file.state.lock() {
            *state = loaded;
        }
        Ok(file)
    }

    fn load(&self) -> Result<Loaded, String> {
        let meta = std::fs::metadata(&self.path).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
        let keys = parse_keys(&text)?;
        Ok(Loaded {
            version: Some((
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            )),
            keys,
        })
    }

    fn check(&self, name: &str, key: &str) -> Result<(), Denied> {
        let Ok(mut state) = self.state.lock() else {
            return Err(Denied::BadKey);
        };
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if current.is_some() && current != state.version {
            match self.load() {
                Ok(loaded) => {
                    tracing::info!(keys = loaded.keys.len(), "stream keys reloaded");
                    *state = loaded;
                }
                // Keep the keys that worked; an editor may be half-way through a save.
                Err(error) => {
                    tracing::error!(%error, "cannot reload stream keys; keeping the old ones")
                }
            }
        }
        // One key covers every rendition of a stream (`talk@720p` is keyed as `talk`).
        let stream = livecast_media::publish::split_rendition(name).map_or(name, |(s, _)| s);
        let expected = state.keys.get(stream).or_else(|| state.keys.get("*"));
        match expected {
            Some(secret) if !key.is_empty() && constant_time_eq(secret, key) => Ok(()),
            _ => Err(Denied::BadKey),
        }
    }
}

/// Parses `<stream> <secret>` lines; `#` comments and blank lines are skipped.
fn parse_keys(text: &str) -> Result<HashMap<String, String>, String> {
    let mut keys = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(name), Some(secret), None) => {
                keys.insert(name.to_string(), secret.to_string());
            }
            _ => return Err(format!("line {}: expected `<stream> <secret>`", number + 1)),
        }
    }
    Ok(keys)
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[derive(Debug)]
struct Callback {
    uri: hyper::Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Callback {
    fn new(url: &str) -> Result<Self, IngestError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| IngestError::Config(format!("--on-publish {url}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(IngestError::Config(format!(
                "--on-publish must be an http:// URL, got {url}"
            )));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self { uri, client })
    }

    async fn check(
        &self,
        name: &str,
        pairs: &[(String, String)],
        peer: SocketAddr,
    ) -> Result<(), Denied> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("call", "publish")
                .append_pair("app", crate::connection::APP)
                .append_pair("name", name)
                .append_pair("addr", &peer.ip().to_string());
            for (k, v) in pairs {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let request = hyper::Request::post(self.uri.clone())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::USER_AGENT, "livecast-ingest")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Denied::Callback)?;
        let answer = tokio::time::timeout(CALLBACK_TIMEOUT, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            // Drain the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status)) => {
                tracing::warn!(%status, stream = name, "on_publish callback refused the publish");
                Err(Denied::Callback)
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "on_publish callback unreachable; publish refused");
                Err(Denied::Callback)
            }
            Err(_) => {
                tracing::error!("on_publish callback timed out; publish refused");
                Err(Denied::Callback)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: usize, window_ms: u64) -> FailureLimit {
        FailureLimit {
            max,
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn an_address_that_failed_too_often_is_refused_until_the_window_passes() {
        let failures = Failures::new(limit(3, 300));
        let guesser: IpAddr = [10, 0, 0, 9].into();
        let other: IpAddr = [10, 0, 0, 10].into();
        for _ in 0..2 {
            failures.record(guesser);
            assert!(!failures.blocked(guesser));
        }
        failures.record(guesser);
        assert!(failures.blocked(guesser));
        assert!(!failures.blocked(other), "only the guesser is refused");
        failures.record(other);
        failures.forget(other);
        assert!(failures.recent.lock().unwrap().get(&other).is_none());
        std::thread::sleep(Duration::from_millis(350));
        assert!(!failures.blocked(guesser), "let in again after the window");
        let off = Failures::new(limit(0, 300));
        for _ in 0..10 {
            off.record(guesser);
        }
        assert!(!off.blocked(guesser));
    }

    #[test]
    fn failures_are_tracked_for_a_bounded_number_of_addresses() {
        let failures = Failures::new(limit(1, 60_000));
        for i in 0..(MAX_TRACKED as u32 + 50) {
            failures.record(IpAddr::from(i.to_be_bytes()));
        }
        let recent = failures.recent.lock().unwrap();
        assert!(recent.len() <= MAX_TRACKED, "{}", recent.len());
    }

    #[tokio::test]
    async fn the_allow_list_is_loopback_unless_a_secret_guards_publishing() {
        let any = limit(0, 1000);
        let outside: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let open = Auth::new(&[], None, None, any).unwrap();
        assert_eq!(open.check("cam", "", local).await, Ok(()));
        assert_eq!(open.check("cam", "", outside).await, Err(Denied::Address));
        assert!(
            open.describe().contains("127.0.0.0/8"),
            "{}",
            open.describe()
        );
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "cam k3y\n").unwrap();
        let keyed = Auth::new(&[], Some(&keys), None, any).unwrap();
        assert_eq!(keyed.check("cam", "key=k3y", outside).await, Ok(()));
        assert!(keyed.describe().contains("any address"));
        let narrow = Auth::new(
            &Cidr::parse_list("10.0.0.0/8").unwrap(),
            Some(&keys),
            None,
            any,
        )
        .unwrap();
        assert_eq!(
            narrow.check("cam", "key=k3y", outside).await,
            Err(Denied::Address)
        );
        assert_eq!(
            narrow
                .check("cam", "key=k3y", "10.1.2.3:1".parse().unwrap())
                .await,
            Ok(())
        );
    }

    #[test]
    fn keys_file_format() {
        let keys = parse_keys("# studio\ncam  s3cret\n\n* fallback # any name\n").unwrap();
        assert_eq!(keys["cam"], "s3cret");
        assert_eq!(keys["*"], "fallback");
        assert!(parse_keys("cam\n").unwrap_err().contains("line 1"));
        assert!(parse_keys("cam a b\n").is_err());
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }

    #[test]
    fn keys_are_checked_and_reloaded_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "cam one\n").unwrap();
        let file = KeysFile::open(&path).unwrap();
        assert_eq!(file.check("cam", "one"), Ok(()));
        assert_eq!(file.check("cam", "two"), Err(Denied::BadKey));
        assert_eq!(file.check("cam", ""), Err(Denied::BadKey));
        assert_eq!(file.check("other", "one"), Err(Denied::BadKey));
        std::fs::write(&path, "cam two-longer\n").unwrap();
        assert_eq!(file.check("cam", "two-longer"), Ok(()));
        assert_eq!(file.check("cam", "one"), Err(Denied::BadKey));
        // A broken save keeps the keys that worked.
        std::fs::write(&path, "cam\n").unwrap();
        assert_eq!(file.check("cam", "two-longer"), Ok(()));
        assert!(KeysFile::open(&dir.path().join("missing")).is_err());
    }
}
