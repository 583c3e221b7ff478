//! What a viewer who reaches a front-end directly cannot do: hold connections open by sending
//! headers slowly, take more connections than the cap, or send oversized heads.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{raw, start_with, status};

/// Reads until the front-end closes the connection, at most `limit`; `None` if still open.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(limit, socket.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| buf)
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let web = start_with(&["--header-timeout-secs=1"]).await;
    // A slowloris: one header byte at a time, never finishing.
    let mut slow = TcpStream::connect(web.addr).await.expect("connect");
    slow.write_all(b"GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nX-A")
        .await
        .expect("write");
    let dripping = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(b"a").await.is_err() {
                break;
            }
        }
        slow
    });
    // A kept-alive connection that goes quiet after one answer.
    let mut idle = TcpStream::connect(web.addr).await.expect("connect");
    idle.write_all(b"GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answered = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection must be closed");
    assert_eq!(status(&String::from_utf8_lossy(&answered)), "200");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let mut slow = dripping.await.expect("drip");
    assert!(
        closed_within(&mut slow, Duration::from_secs(3))
            .await
            .is_some(),
        "a connection sending one header byte every 300 ms must be closed after 1 s"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let web = start_with(&["--max-connections=2", "--header-timeout-secs=30"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(web.addr).await.expect("connect");
        socket
            .write_all(b"GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        assert!(socket.read(&mut buf).await.expect("read") > 0);
        held.push(socket);
    }
    // The kernel completes the third handshake, but the front-end does not take it on.
    let mut third = TcpStream::connect(web.addr).await.expect("connect");
    third
        .write_all(b"GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {buf:?}");
    held.pop();
    let answer = closed_within(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a connection closed");
    assert_eq!(status(&String::from_utf8_lossy(&answer)), "200");
}

/// Sends `request`, then reads what came back before the connection closed.
async fn answer_to(addr: std::net::SocketAddr, request: Vec<u8>) -> String {
    let (mut read, mut write) = TcpStream::connect(addr)
        .await
        .expect("connect")
        .into_split();
    // The whole request is written before the answer is read, as curl does: a server that
    // closes with unread bytes resets the connection, and the write fails.
    write
        .write_all(&request)
        .await
        .expect("the whole request is taken");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut buf))
        .await
        .expect("closed");
    drop(write);
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let web = start_with(&[]).await;
    let long = |n: usize| {
        format!(
            "GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
        .into_bytes()
    };
    let mut many = b"GET /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for (what, request) in [("8 MB", long(8 << 20)), ("1000 lines", many)] {
        let text = answer_to(web.addr, request).await;
        assert_eq!(status(&text), "431", "{what}: {text}");
    }
    // The front-end still serves.
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );
}
