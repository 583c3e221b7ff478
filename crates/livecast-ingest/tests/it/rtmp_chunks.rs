//! The RTMP chunk layer against a hand-written publisher: messages on different chunk streams
//! interleaved chunk by chunk (legal, and what encoders with small chunk sizes do), aggregate
//! messages, limits, and a publisher that stops sending media.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::publisher::{flv_tags, media, Message, Publisher};
use crate::support::{ffprobe, make_clip, start_ingest, wait_until};

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
