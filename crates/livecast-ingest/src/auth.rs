//! Publish authentication: a stream-keys file and an `on_publish`-style HTTP callback.
//!
//! The secret travels as a query on the stream name (`rtmp://HOST/live/cam?key=SECRET`, or in
//! OBS the stream key `cam?key=SECRET`). The keys file has one `<stream> <secret>` pair per line
//! (`#` starts a comment; the stream `*` matches any name) and is read again whenever its
//! modification time or size changes. The callback gets a form POST like nginx-rtmp's
//! `on_publish` (`call=publish&app=live&name=…&addr=…` plus the query's own pairs, the key
//! included); a 2xx answer allows the publish, anything else refuses it. When both are set both
//! must allow. The secret is never logged and never becomes part of a path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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
    /// No key, or not the stream's key.
    BadKey,
    /// The callback answered something other than 2xx, or could not be reached.
    Callback,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::BadKey => "bad_key",
            Denied::Callback => "callback_refused",
        }
    }
}

/// The checks a publish must pass.
#[derive(Debug)]
pub(crate) struct Auth {
    keys: Option<KeysFile>,
    callback: Option<Callback>,
}

impl Auth {
    pub fn new(keys: Option<&Path>, callback: Option<&str>) -> Result<Self, IngestError> {
        let keys = keys.map(KeysFile::open).transpose()?;
        let callback = callback.map(Callback::new).transpose()?;
        Ok(Self { keys, callback })
    }

    /// Checks a publish of `name` with the query `query` (what followed `?`) from `peer`.
    pub async fn check(&self, name: &str, query: &str, peer: SocketAddr) -> Result<(), Denied> {
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
        let expected = state.keys.get(name).or_else(|| state.keys.get("*"));
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
fn constant_time_eq(a: &str, b: &str) -> bool {
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
