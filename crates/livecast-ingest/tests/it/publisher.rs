//! A publisher speaking RTMP by hand, for what ffmpeg cannot do on purpose (interleaved chunk
//! streams, aggregates, oversized messages, silence) and for timing a publish on the
//! publisher's own clock. Shared with the system tests, which include this file.

// Each test binary that includes this file uses part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CHUNK: usize = 128;

/// AMF0 values enough for the publish commands.
pub enum Amf<'a> {
    Number(f64),
    Str(&'a str),
    Null,
    Object(&'a [(&'a str, &'a str)]),
}

pub fn amf(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for value in values {
        match value {
            Amf::Number(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf::Str(s) => {
                out.push(2);
                string(&mut out, s);
            }
            Amf::Null => out.push(5),
            Amf::Object(pairs) => {
                out.push(3);
                for (k, v) in *pairs {
                    string(&mut out, k);
                    out.push(2);
                    string(&mut out, v);
                }
                out.extend_from_slice(&[0, 0, 9]);
            }
        }
    }
    out
}

/// One RTMP message to send.
pub struct Message {
    pub csid: u8,
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// The chunks of a message: a type 0 chunk, then type 3 continuations of at most CHUNK bytes.
pub fn chunks(m: &Message) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, piece) in m.payload.chunks(CHUNK).enumerate() {
        let mut chunk = Vec::with_capacity(piece.len() + 12);
        if i == 0 {
            chunk.push(m.csid);
            chunk.extend_from_slice(&m.timestamp.min(0xff_ffff).to_be_bytes()[1..]);
            chunk.extend_from_slice(&(m.payload.len() as u32).to_be_bytes()[1..]);
            chunk.push(m.type_id);
            chunk.extend_from_slice(&m.stream_id.to_le_bytes());
        } else {
            chunk.push(0xc0 | m.csid);
        }
        chunk.extend_from_slice(piece);
        out.push(chunk);
    }
    out
}

/// Reads the FLV file's tags: (type, timestamp, body).
pub fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut pos = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= file.len() {
        let kind = file[pos] & 0x1f;
        let size = u32::from_be_bytes([0, file[pos + 1], file[pos + 2], file[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([file[pos + 7], file[pos + 4], file[pos + 5], file[pos + 6]]);
        tags.push((kind, ts, file[pos + 11..pos + 11 + size].to_vec()));
        pos += 11 + size + 4;
    }
    tags
}

/// A publisher speaking RTMP by hand.
pub struct Publisher {
    pub socket: TcpStream,
}

impl Publisher {
    /// Connects, shakes hands (the simple handshake), connects to `live` and publishes `name`,
    /// giving the server a while to answer each command (a server that never answers is
    /// still published to).
    pub async fn start(addr: std::net::SocketAddr, name: &str) -> Self {
        Self::open(addr, name, false).await.0
    }

    /// Like [`Publisher::start`], but waits for each answer (connect's and createStream's
    /// `_result`, publish's `NetStream.Publish.Start`) and goes on at once when it is there;
    /// also returns how long the set-up took from before the TCP connect.
    pub async fn start_answered(addr: std::net::SocketAddr, name: &str) -> (Self, Duration) {
        Self::open(addr, name, true).await
    }

    async fn open(addr: std::net::SocketAddr, name: &str, answered: bool) -> (Self, Duration) {
        let began = Instant::now();
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..1536).map(|i| (i * 7 % 251) as u8));
        c0c1[1..9].fill(0);
        socket.write_all(&c0c1).await.expect("c0c1");
        let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
        socket.read_exact(&mut s0s1s2).await.expect("s0s1s2");
        socket.write_all(&s0s1s2[1..1537]).await.expect("c2");
        let mut publisher = Self { socket };
        let connect = amf(&[
            Amf::Str("connect"),
            Amf::Number(1.0),
            Amf::Object(&[
                ("app", "live"),
                ("type", "nonprivate"),
                ("tcUrl", "rtmp://127.0.0.1/live"),
            ]),
        ]);
        // Like real encoders, wait for each answer before the next command.
        publisher.send(&[command(0, connect)]).await;
        publisher.answer(answered, b"_result", 200).await;
        let create = amf(&[Amf::Str("createStream"), Amf::Number(2.0), Amf::Null]);
        publisher.send(&[command(0, create)]).await;
        publisher.answer(answered, b"_result", 200).await;
        let publish = amf(&[
            Amf::Str("publish"),
            Amf::Number(3.0),
            Amf::Null,
            Amf::Str(name),
            Amf::Str("live"),
        ]);
        publisher.send(&[command(1, publish)]).await;
        // Let the server answer before media flows.
        publisher.answer(answered, b"Publish.Start", 300).await;
        (publisher, began.elapsed())
    }

    /// Waits for the server's answer: until `needle` arrives (within 5 s) or, when not
    /// `answered`, for `drain_ms` whatever arrives.
    async fn answer(&mut self, answered: bool, needle: &[u8], drain_ms: u64) {
        if !answered {
            return self.drain(Duration::from_millis(drain_ms)).await;
        }
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            while !seen.windows(needle.len()).any(|w| w == needle) {
                match self.socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            true
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no {:?} from the server",
            String::from_utf8_lossy(needle)
        );
    }

    /// Sends the messages with their chunks interleaved round-robin.
    pub async fn send(&mut self, messages: &[Message]) {
        let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> =
            messages.iter().map(|m| chunks(m).into()).collect();
        let mut bytes = Vec::new();
        while queues.iter().any(|q| !q.is_empty()) {
            for queue in &mut queues {
                if let Some(chunk) = queue.pop_front() {
                    bytes.extend_from_slice(&chunk);
                }
            }
        }
        self.socket.write_all(&bytes).await.expect("send");
    }

    /// Reads (and drops) what the server sends for a while.
    pub async fn drain(&mut self, time: Duration) {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(time, async {
            loop {
                match self.socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    /// Whether the server closed the connection within `time`.
    pub async fn closed_within(&mut self, time: Duration) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(time, async {
            loop {
                match self.socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

pub fn command(stream_id: u32, payload: Vec<u8>) -> Message {
    Message {
        csid: 3,
        type_id: 20,
        stream_id,
        timestamp: 0,
        payload,
    }
}

pub fn media(kind: u8, timestamp: u32, payload: Vec<u8>) -> Message {
    Message {
        // Audio and video on their own chunk streams, as encoders do.
        csid: if kind == 8 { 4 } else { 6 },
        type_id: kind,
        stream_id: 1,
        timestamp,
        payload,
    }
}
