//! The Zabbix sink: the trapper protocol (what `zabbix_sender` speaks), sending per-stream
//! concurrent viewers and request rates to trapper items of one Zabbix host.
//!
//! A message is `ZBXD`, the flags byte 0x01, the data length and a reserved word (both 32-bit
//! little endian), then `{"request":"sender data","data":[{"host","key","value","clock"}]}`.
//! The server answers in the same framing with `{"response":"success","info":"processed: N;
//! failed: M; total: T; seconds spent: S"}`; failed values name items that do not exist or do
//! not accept trapper data.
//!
//! [`report`] is the task that sends, every interval, the streams (for low-level discovery),
//! then each stream's viewers and request rate; [`values`] decides what one report holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use livecast_telemetry::CancellationToken;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::viewers::{Counts, Viewers};

const HEADER: &[u8; 5] = b"ZBXD\x01";
/// Largest answer accepted from a server.
const MAX_RESPONSE: usize = 1 << 20;

/// One value for one item.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Value {
    pub host: String,
    pub key: String,
    pub value: String,
    pub clock: u64,
}

/// What the server did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Processed {
    pub processed: u64,
    pub failed: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ZabbixError {
    #[error("cannot reach zabbix: {0}")]
    Io(#[from] std::io::Error),
    #[error("zabbix answered something else: {0}")]
    Protocol(String),
}

#[derive(Serialize)]
struct Request<'a> {
    request: &'static str,
    data: &'a [Value],
}

/// Encodes a sender-data message.
pub(crate) fn encode(values: &[Value]) -> Vec<u8> {
    let json = serde_json::to_vec(&Request {
        request: "sender data",
        data: values,
    })
    .unwrap_or_default();
    let mut out = Vec::with_capacity(13 + json.len());
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Decodes a server answer into its counts.
pub(crate) fn decode(answer: &[u8]) -> Result<Processed, ZabbixError> {
    let bad = |why: &str| ZabbixError::Protocol(why.to_string());
    if answer.len() < 13 || &answer[..4] != b"ZBXD" {
        return Err(bad("no ZBXD header"));
    }
    let len = u32::from_le_bytes([answer[5], answer[6], answer[7], answer[8]]) as usize;
    let body = answer
        .get(13..13 + len)
        .ok_or_else(|| bad("truncated answer"))?;
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    if json["response"] != "success" {
        return Err(bad(&json.to_string()));
    }
    let info = json["info"].as_str().ok_or_else(|| bad("no info"))?;
    let field = |name: &str| -> Option<u64> {
        info.split(';').find_map(|part| {
            part.trim()
                .strip_prefix(name)?
                .trim_start_matches(':')
                .trim()
                .parse()
                .ok()
        })
    };
    Ok(Processed {
        processed: field("processed").ok_or_else(|| bad(info))?,
        failed: field("failed").ok_or_else(|| bad(info))?,
        total: field("total").ok_or_else(|| bad(info))?,
    })
}

/// Sends `values` to the trapper at `server` (HOST:PORT).
pub(crate) async fn send(server: &str, values: &[Value]) -> Result<Processed, ZabbixError> {
    let io = async {
        let mut stream = TcpStream::connect(server).await?;
        stream.write_all(&encode(values)).await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| ZabbixError::Io(std::io::ErrorKind::TimedOut.into()))??;
    decode(&answer)
}

/// Seconds since the epoch, for `clock`.
pub(crate) fn clock(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Where and how viewer counts go to Zabbix.
#[derive(Debug)]
pub(crate) struct Target {
    /// The trapper's `HOST:PORT`.
    pub server: String,
    /// The Zabbix host the items belong to.
    pub host: String,
    /// First part of every item key (`<prefix>.viewers[<stream>]`).
    pub prefix: String,
    /// How often a report is sent; request rates are per second over it.
    pub interval: Duration,
    /// Whether each report starts with the low-level discovery of the streams.
    pub discovery: bool,
    /// The front-ends' stream list: live streams nobody watches are reported with 0.
    pub streams_url: Option<http::Uri>,
}

/// The names of the live streams in a stream list (`/api/streams`), or none when it cannot be
/// had: then only streams with viewers are reported.
async fn live_streams(url: &http::Uri) -> Option<Vec<String>> {
    use http_body_util::BodyExt as _;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(url.clone()))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(
        list["streams"]
            .as_array()?
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// One report: the discovery value (when asked for and there are streams), then each
/// stream's concurrent viewers and its requests per second over `target.interval`. Every
/// stream in `live` is reported, with 0 when nobody watched it.
pub(crate) fn values(
    target: &Target,
    counts: impl IntoIterator<Item = (String, Counts)>,
    requests: impl IntoIterator<Item = (String, u64)>,
    live: Vec<String>,
    now: SystemTime,
) -> Vec<Value> {
    let mut counts: BTreeMap<String, Counts> = counts.into_iter().collect();
    let mut requests: BTreeMap<String, u64> = requests.into_iter().collect();
    for stream in live {
        counts.entry(stream.clone()).or_default();
        requests.entry(stream).or_default();
    }
    let clock = clock(now);
    let prefix = &target.prefix;
    let value = |key: String, value: String| Value {
        host: target.host.clone(),
        key,
        value,
        clock,
    };
    let mut values = Vec::new();
    if target.discovery && !counts.is_empty() {
        let streams: Vec<serde_json::Value> = counts
            .keys()
            .map(|s| serde_json::json!({ "{#STREAM}": s }))
            .collect();
        values.push(value(
            format!("{prefix}.streams.discovery"),
            serde_json::Value::Array(streams).to_string(),
        ));
    }
    values.extend(counts.iter().map(|(stream, c)| {
        value(
            format!("{prefix}.viewers[{stream}]"),
            c.concurrent.to_string(),
        )
    }));
    values.extend(requests.iter().map(|(stream, n)| {
        value(
            format!("{prefix}.requests[{stream}]"),
            format!("{:.3}", *n as f64 / target.interval.as_secs_f64()),
        )
    }));
    values
}

/// Every interval until `shutdown`: one report to the trapper, counted in
/// `livecast_logship_zabbix_values_total` by what Zabbix did with each value.
pub(crate) async fn report(
    target: Target,
    viewers: Arc<Mutex<Viewers>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(target.interval) => {}
        }
        let live = match &target.streams_url {
            Some(url) => live_streams(url).await.unwrap_or_else(|| {
                tracing::warn!(%url, "cannot read the stream list; reporting watched streams only");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let now = SystemTime::now();
        let (counts, requests) = match viewers.lock() {
            Ok(mut v) => (v.counts(now), v.take_requests()),
            Err(_) => continue,
        };
        let values = values(&target, counts, requests, live, now);
        if values.is_empty() {
            continue;
        }
        let (server, host) = (&target.server, &target.host);
        match send(server, &values).await {
            Ok(done) => {
                metrics
                    .zabbix_values
                    .with_label_values(&["processed"])
                    .inc_by(done.processed);
                metrics
                    .zabbix_values
                    .with_label_values(&["failed"])
                    .inc_by(done.failed);
                if done.failed > 0 {
                    tracing::warn!(failed = done.failed, %host, "zabbix refused values: are the trapper items defined?");
                }
            }
            Err(error) => {
                metrics
                    .zabbix_values
                    .with_label_values(&["unsent"])
                    .inc_by(values.len() as u64);
                tracing::warn!(%error, %server, "cannot send to zabbix");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip() {
        let values = vec![Value {
            host: "livecast".into(),
            key: "livecast.viewers[cam]".into(),
            value: "7".into(),
            clock: 1_700_000_000,
        }];
        let message = encode(&values);
        assert_eq!(&message[..5], b"ZBXD\x01");
        let len = u32::from_le_bytes([message[5], message[6], message[7], message[8]]) as usize;
        assert_eq!(len, message.len() - 13);
        assert!(std::str::from_utf8(&message[13..])
            .unwrap()
            .starts_with("{\"request\":\"sender data\",\"data\":[{\"host\":\"livecast\""));

        let body = br#"{"response":"success","info":"processed: 1; failed: 2; total: 3; seconds spent: 0.000136"}"#;
        let mut answer = b"ZBXD\x01".to_vec();
        answer.extend_from_slice(&(body.len() as u32).to_le_bytes());
        answer.extend_from_slice(&0u32.to_le_bytes());
        answer.extend_from_slice(body);
        assert_eq!(
            decode(&answer).unwrap(),
            Processed {
                processed: 1,
                failed: 2,
                total: 3
            }
        );
        assert!(decode(b"HTTP/1.1 400").is_err());
        assert!(decode(&answer[..20]).is_err());
    }

    #[test]
    fn a_report_lists_discovery_then_viewers_then_rates_and_unwatched_live_streams_as_zero() {
        let target = Target {
            server: "127.0.0.1:10051".into(),
            host: "livecast".into(),
            prefix: "livecast".into(),
            interval: Duration::from_secs(4),
            discovery: true,
            streams_url: None,
        };
        let watched = Counts {
            concurrent: 3,
            peak: 5,
            unique: 7,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let got = values(
            &target,
            [("cam".to_string(), watched)],
            [("cam".to_string(), 10)],
            vec!["cam".into(), "idle".into()],
            now,
        );
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "livecast.streams.discovery",
                    r#"[{"{#STREAM}":"cam"},{"{#STREAM}":"idle"}]"#
                ),
                ("livecast.viewers[cam]", "3"),
                ("livecast.viewers[idle]", "0"),
                ("livecast.requests[cam]", "2.500"),
                ("livecast.requests[idle]", "0.000"),
            ]
        );
        assert!(got
            .iter()
            .all(|v| v.host == "livecast" && v.clock == 1_700_000_000));
        // Nothing watched, nothing live: nothing to send, not even a discovery.
        let none = values(&target, [], [], Vec::new(), now);
        assert!(none.is_empty());
        let quiet = Target {
            discovery: false,
            ..target
        };
        let got = values(&quiet, [("cam".to_string(), watched)], [], Vec::new(), now);
        // Without discovery, and a stream with viewers but no requests: its viewers only.
        let keys: Vec<&str> = got.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["livecast.viewers[cam]"]);
    }
}
