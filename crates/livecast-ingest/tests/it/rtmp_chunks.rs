//! The RTMP chunk layer against a hand-written publisher: messages on different chunk streams
//! interleaved chunk by chunk (legal, and what encoders with small chunk sizes do), aggregate
//! messages, limits, and a publisher that stops sending media.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ffprobe, make_clip, start_ingest, wait_until};

const CHUNK: usize = 128;

/// AMF0 values enough for the publish commands.
enum Amf<'a> {
    Number(f64),
    Str(&'a str),
    Null,
    Object(&'a [(&'a str, &'a str)]),
}

fn amf(values: &[Amf]) -> Vec<u8> {
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
struct Message {
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: Vec<u8>,
}

/// The chunks of a message: a type 0 chunk, then type 3 continuations of at most CHUNK bytes.
fn chunks(m: &Message) -> Vec<Vec<u8>> {
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
fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
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
struct Publisher {
    socket: TcpStream,
}

impl Publisher {
    /// Connects, shakes hands (the simple handshake), connects to `live` and publishes `name`.
    async fn start(addr: std::net::SocketAddr, name: &str) -> Self {
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
        publisher.drain(Duration::from_millis(200)).await;
        let create = amf(&[Amf::Str("createStream"), Amf::Number(2.0), Amf::Null]);
        publisher.send(&[command(0, create)]).await;
        publisher.drain(Duration::from_millis(200)).await;
        let publish = amf(&[
            Amf::Str("publish"),
            Amf::Number(3.0),
            Amf::Null,
            Amf::Str(name),
            Amf::Str("live"),
        ]);
        publisher.send(&[command(1, publish)]).await;
        // Let the server answer before media flows.
        publisher.drain(Duration::from_millis(300)).await;
        publisher
    }

    /// Sends the messages with their chunks interleaved round-robin.
    async fn send(&mut self, messages: &[Message]) {
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
    async fn drain(&mut self, time: Duration) {
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
    async fn closed_within(&mut self, time: Duration) -> bool {
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

fn command(stream_id: u32, payload: Vec<u8>) -> Message {
    Message {
        csid: 3,
        type_id: 20,
        stream_id,
        timestamp: 0,
        payload,
    }
}

fn media(kind: u8, timestamp: u32, payload: Vec<u8>) -> Message {
    Message {
        // Audio and video on their own chunk streams, as encoders do.
        csid: if kind == 8 { 4 } else { 6 },
        type_id: kind,
        stream_id: 1,
        timestamp,
        payload,
    }
}

/// An aggregate message (type 22) carrying `tags` as FLV tags.
fn aggregate(tags: &[(u8, u32, Vec<u8>)]) -> Message {
    let base = tags[0].1;
    let mut payload = Vec::new();
    for (kind, ts, body) in tags {
        let start = payload.len();
        payload.push(*kind);
        payload.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        payload.extend_from_slice(&ts.to_be_bytes()[1..]);
        payload.push((ts >> 24) as u8);
        payload.extend_from_slice(&[0, 0, 0]);
        payload.extend_from_slice(body);
        let size = (payload.len() - start) as u32;
        payload.extend_from_slice(&size.to_be_bytes());
    }
    Message {
        csid: 5,
        type_id: 22,
        stream_id: 1,
        timestamp: base,
        payload,
    }
}

fn frames(playlist: &Path, kind: &str) -> u64 {
    let (streams, _) = ffprobe(&playlist.display().to_string());
    streams.iter().find(|s| s.0 == kind).map_or(0, |s| s.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_chunk_streams_and_aggregates_arrive_intact() {
    livecast_telemetry::init_logging(livecast_telemetry::LogFormat::Text);
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = std::fs::read(make_clip(dir.path(), 4)).expect("clip");
    let tags: Vec<_> = flv_tags(&clip)
        .into_iter()
        .filter(|t| t.0 == 8 || t.0 == 9)
        .collect();
    let ingest = start_ingest(&hls, &["--container=ts", "--part-ms=0"]).await;
    let mut publisher = Publisher::start(ingest.rtmp, "chunks").await;

    // Send an audio and a video message at a time with their chunks interleaved (each on its
    // own chunk stream, as the specification allows); every tenth pair goes as one aggregate
    // message instead. Two messages of one kind in a row go one after the other.
    let mut pending: Option<&(u8, u32, Vec<u8>)> = None;
    let mut pairs = 0;
    for tag in &tags {
        match pending.take() {
            Some(first) if first.0 != tag.0 => {
                pairs += 1;
                if pairs % 10 == 0 {
                    publisher
                        .send(&[aggregate(&[first.clone(), tag.clone()])])
                        .await;
                } else {
                    let both = [first, tag].map(|(kind, ts, body)| media(*kind, *ts, body.clone()));
                    publisher.send(&both).await;
                }
            }
            Some(first) => {
                publisher
                    .send(&[media(first.0, first.1, first.2.clone())])
                    .await;
                pending = Some(tag);
            }
            None => pending = Some(tag),
        }
    }
    if let Some(last) = pending {
        publisher
            .send(&[media(last.0, last.1, last.2.clone())])
            .await;
    }
    assert!(pairs > 50, "{pairs} interleaved pairs");
    drop(publisher);
    let playlist = hls.join("chunks/index.m3u8");
    wait_until("ENDLIST", Duration::from_secs(10), || {
        let playlist = playlist.clone();
        async move {
            std::fs::read_to_string(&playlist).is_ok_and(|t| t.contains("#EXT-X-ENDLIST"))
        }
    })
    .await;
    ingest.stop().await;
    let count = |kind: u8| {
        tags.iter()
            .filter(|t| t.0 == kind && t.2.get(1) == Some(&1))
            .count() as u64
    };
    assert_eq!(
        frames(&playlist, "video"),
        count(9),
        "every video frame arrives intact"
    );
    assert_eq!(
        frames(&playlist, "audio"),
        count(8),
        "every audio frame arrives intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_without_media_is_closed_and_oversized_messages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let ingest = start_ingest(&hls, &["--idle-timeout-secs=2"]).await;

    // Publishes, then only keeps the connection busy with pings: closed for want of media.
    let mut idle = Publisher::start(ingest.rtmp, "idle").await;
    let started = tokio::time::Instant::now();
    let ping = Message {
        csid: 2,
        type_id: 4,
        stream_id: 0,
        timestamp: 0,
        payload: vec![0, 6, 0, 0, 0, 1],
    };
    let mut closed = false;
    for _ in 0..8 {
        idle.send(std::slice::from_ref(&ping)).await;
        if idle.closed_within(Duration::from_millis(500)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a publisher that sends no media is closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(4),
        "{after:?}"
    );

    // A message header announcing more than the limit ends the connection at once.
    let mut big = Publisher::start(ingest.rtmp, "big").await;
    let mut header = vec![6u8];
    header.extend_from_slice(&[0, 0, 0]);
    header.extend_from_slice(&0x00ff_ffffu32.to_be_bytes()[1..]);
    header.push(9);
    header.extend_from_slice(&1u32.to_le_bytes());
    big.socket.write_all(&header).await.expect("header");
    assert!(big.closed_within(Duration::from_secs(2)).await);
    ingest.stop().await;
}
