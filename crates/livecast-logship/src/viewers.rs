//! Concurrent viewers: the distinct viewers of each stream seen within a sliding window.
//!
//! A viewer is the front-end's session cookie (`livecast.session`); without it, the client
//! viewer's identity from a signed playback token (`user.name`), and without that the client
//! address and user agent together. Counting sessions rather than addresses keeps a whole
//! office behind one NAT address from counting as one viewer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The access-log fields the counter reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Fields<'a> {
    #[serde(rename = "@timestamp", borrow)]
    pub timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "client.ip", borrow)]
    pub client_ip: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "user_agent.original", borrow)]
    pub user_agent: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "livecast.stream", borrow)]
    pub stream: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "livecast.session", borrow)]
    pub session: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "user.name", borrow)]
    pub user: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "http.response.status_code")]
    pub status: Option<u16>,
}

#[derive(Debug, Default)]
struct Stream {
    /// Requests since the last [`Viewers::take_requests`].
    requests: u64,
    /// When each session was last seen.
    last_seen: HashMap<String, SystemTime>,
    /// Every session seen since the stream was first seen.
    unique: HashSet<String>,
    /// The most sessions seen at once.
    peak: usize,
}

/// Counts per stream.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub concurrent: usize,
    pub peak: usize,
    pub unique: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Viewers {
    /// A session counts as watching this long after its last request.
    window: Duration,
    /// Per stream name.
    streams: HashMap<String, Stream>,
}

impl Viewers {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            streams: HashMap::new(),
        }
    }

    /// Takes one access-log line into account.
    pub fn observe(&mut self, fields: &Fields<'_>) {
        let Some(stream) = fields.stream.as_deref() else {
            return;
        };
        if fields.status.is_some_and(|s| s >= 400) {
            return;
        }
        let Some(at) = fields
            .timestamp
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
        else {
            return;
        };
        let viewer = match (&fields.session, &fields.user, &fields.client_ip) {
            (Some(session), _, _) if !session.is_empty() => format!("s:{session}"),
            (_, Some(user), _) if !user.is_empty() => format!("u:{user}"),
            (_, _, Some(ip)) => format!("a:{ip}|{}", fields.user_agent.as_deref().unwrap_or("")),
            _ => return,
        };
        let entry = self.streams.entry(stream.to_string()).or_default();
        entry.requests += 1;
        let seen = entry.last_seen.entry(viewer.clone()).or_insert(at);
        if at > *seen {
            *seen = at;
        }
        entry.unique.insert(viewer);
    }

    /// Requests per stream since the last call.
    pub fn take_requests(&mut self) -> Vec<(String, u64)> {
        self.streams
            .iter_mut()
            .map(|(name, s)| (name.clone(), std::mem::take(&mut s.requests)))
            .collect()
    }

    /// Drops viewers outside the window and returns the counts per stream.
    pub fn counts(&mut self, now: SystemTime) -> Vec<(String, Counts)> {
        let horizon = now
            .checked_sub(self.window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out: Vec<_> = self
            .streams
            .iter_mut()
            .map(|(name, s)| {
                s.last_seen.retain(|_, at| *at >= horizon);
                s.peak = s.peak.max(s.last_seen.len());
                (
                    name.clone(),
                    Counts {
                        concurrent: s.last_seen.len(),
                        peak: s.peak,
                        unique: s.unique.len(),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(session: Option<&str>, ip: &str, ua: &str, at: &str) -> String {
        serde_json::json!({
            "@timestamp": at, "client.ip": ip, "user_agent.original": ua, "livecast.stream": "cam",
            "livecast.session": session, "http.response.status_code": 200
        })
        .to_string()
    }

    #[test]
    fn sessions_behind_one_address_are_distinct_viewers() {
        let mut v = Viewers::new(Duration::from_secs(30));
        for s in ["a", "b", "c"] {
            let text = line(Some(s), "10.0.0.1", "same", "2026-11-24T00:00:10Z");
            v.observe(&serde_json::from_str(&text).unwrap());
        }
        // Without a session, the token's viewer: one person from two addresses is one.
        for ip in ["10.0.0.3", "10.0.0.4"] {
            let mut text: serde_json::Value =
                serde_json::from_str(&line(None, ip, "ffplay", "2026-11-24T00:00:20Z")).unwrap();
            text["user.name"] = "ann@corp".into();
            v.observe(&serde_json::from_str(&text.to_string()).unwrap());
        }
        // Without either, address plus user agent.
        for ua in ["x", "y", "y"] {
            let text = line(None, "10.0.0.2", ua, "2026-11-24T00:00:20Z");
            v.observe(&serde_json::from_str(&text).unwrap());
        }
        let now = humantime::parse_rfc3339("2026-11-24T00:00:30Z").unwrap();
        assert_eq!(
            v.counts(now),
            vec![(
                "cam".into(),
                Counts {
                    concurrent: 6,
                    peak: 6,
                    unique: 6
                }
            )]
        );
        // Twenty seconds later the first three have left the window.
        let later = humantime::parse_rfc3339("2026-11-24T00:00:45Z").unwrap();
        assert_eq!(
            v.counts(later),
            vec![(
                "cam".into(),
                Counts {
                    concurrent: 3,
                    peak: 6,
                    unique: 6
                }
            )]
        );
    }
}
