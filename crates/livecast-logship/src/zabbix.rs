//! The Zabbix sink: the trapper protocol (what `zabbix_sender` speaks), sending per-stream
//! concurrent viewers and request rates to trapper items of one Zabbix host.
//!
//! A message is `ZBXD`, the flags byte 0x01, the data length and a reserved word (both 32-bit
//! little endian), then `{"request":"sender data","data":[{"host","key","value","clock"}]}`.
//! The server answers in the same framing with `{"response":"success","info":"processed: N;
//! failed: M; total: T; seconds spent: S"}`; failed values name items that do not exist or do
//! not accept trapper data.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
}
