//! The HTTP/2 server against two kinds of viewer: hyper's HTTP/2 client (a strict, complete
//! implementation, for what a real player does), and frames written by hand (for what the
//! protocol says about everything else).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::*;

/// The stand-in for the request policy. It answers with the request's method, path,
/// authority and body; for `/size/N`, with N bytes; `/hold` waits until released;
/// `/big-head` adds a 40 kB field.
#[derive(Clone, Default)]
struct Stub {
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Stub {
    fn call(
        &self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let this = self.clone();
        async move {
            this.started.fetch_add(1, Ordering::SeqCst);
            let _guard = CountDrop(this.dropped.clone());
            let path = request.uri().path().to_string();
            if path == "/hold" {
                this.release.notified().await;
            }
            let body = if let Some(n) = path.strip_prefix("/size/") {
                let n: usize = n.parse().unwrap();
                Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
            } else {
                let method = request.method().clone();
                let authority = request.uri().authority().map(|a| a.to_string());
                let got = request.into_body().collect().await.unwrap().to_bytes();
                Bytes::from(format!(
                    "{method} {path} {authority:?} {}",
                    String::from_utf8_lossy(&got)
                ))
            };
            let mut response =
                Response::new(Full::new(body).map_err(|never| match never {}).boxed());
            response
                .headers_mut()
                .insert("x-answer", HeaderValue::from_static("yes"));
            if path == "/big-head" {
                // A head larger than two frames: HEADERS, then CONTINUATIONs.
                let value = HeaderValue::from_str(&"h".repeat(40_000)).unwrap();
                response.headers_mut().insert("x-big", value);
            }
            response
        }
    }
}

/// How long the test server's connections may idle.
const IDLE: Duration = Duration::from_millis(300);

/// The server on one end of an in-memory pipe.
fn server(
    handler: &Stub,
    shutdown: &CancellationToken,
) -> (DuplexStream, JoinHandle<std::io::Result<()>>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (handler, shutdown) = (handler.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        let mut conn = Conn::new(16 * 1024, IDLE);
        conn.run(server, &shutdown, move |r| handler.call(r)).await
    });
    (client, task)
}

async fn hyper_client(
    io: DuplexStream,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    // Heads up to 1 MB (hyper's default, 16 KiB, is less than one frame).
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_header_list_size(1 << 20)
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    sender
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://example.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_real_client_gets_answers_large_and_small_on_concurrent_streams() {
    let handler = Stub::default();
    let shutdown = CancellationToken::new();
    let (io, _task) = server(&handler, &shutdown);
    let sender = hyper_client(io).await;
    // Ten streams at once, two of them much larger than the default windows (64 KiB), so
    // they go out in turn as the client's WINDOW_UPDATEs arrive.
    let sizes = [0, 1, 100, 16_384, 16_385, 700_000, 5, 65_536, 1_500_000, 3];
    let fetches = sizes.map(|n| {
        let mut sender = sender.clone();
        async move {
            let response = sender
                .send_request(get(&format!("/size/{n}")))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["x-answer"], "yes");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (n, body)
        }
    });
    for (n, body) in futures_util::future::join_all(fetches).await {
        assert_eq!(body.len(), n);
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }
    // The request's own parts reached the handler.
    let response = sender.clone().send_request(get("/echo?q=1")).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"GET /echo Some(\"example.test\") ");
    // A head larger than a frame.
    let response = sender.clone().send_request(get("/big-head")).await.unwrap();
    assert_eq!(response.headers()["x-big"].len(), 40_000);
    assert_eq!(response.headers()["x-answer"], "yes");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"GET /big-head Some(\"example.test\") ");
    // HEAD: the head alone.
    let mut head = get("/size/1000");
    *head.method_mut() = Method::HEAD;
    let response = sender.clone().send_request(head).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    // A small body comes through whole.
    let post = Request::post("https://example.test/upload")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = sender.clone().send_request(post).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"POST /upload Some(\"example.test\") hello");
}

#[tokio::test]
async fn shutdown_sends_goaway_and_lets_streams_in_flight_finish() {
    let handler = Stub::default();
    let shutdown = CancellationToken::new();
    let (io, task) = server(&handler, &shutdown);
    let sender = hyper_client(io).await;
    let held = tokio::spawn({
        let mut sender = sender.clone();
        async move { sender.send_request(get("/hold")).await }
    });
    while handler.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    handler.release.notify_one();
    let response = held
        .await
        .unwrap()
        .expect("the stream in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    // No new stream after GOAWAY, and the connection ends by itself.
    assert!(sender.clone().send_request(get("/late")).await.is_err());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection ends once its streams are done")
        .unwrap()
        .unwrap();
}

/// A viewer writing frames by hand.
struct Raw {
    io: DuplexStream,
    buf: BytesMut,
}

impl Raw {
    /// Connected, with the preface and empty SETTINGS sent, and the server's SETTINGS and
    /// its ACK of ours read.
    async fn connect(
        handler: &Stub,
        shutdown: &CancellationToken,
    ) -> (Raw, JoinHandle<std::io::Result<()>>) {
        let (io, task) = server(handler, shutdown);
        let mut raw = Raw {
            io,
            buf: BytesMut::new(),
        };
        raw.io.write_all(PREFACE).await.unwrap();
        raw.send(SETTINGS, 0, 0, &[]).await;
        let (kind, flags, _, payload) = raw.frame().await.expect("SETTINGS");
        assert_eq!((kind, flags), (SETTINGS, 0));
        assert!(payload
            .chunks(6)
            .any(|s| s == [0, 3, 0, 0, 0, MAX_STREAMS as u8]));
        assert_eq!(raw.frame().await.map(|f| (f.0, f.1)), Some((SETTINGS, ACK)));
        (raw, task)
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut out = BytesMut::new();
        frame_head(&mut out, payload.len(), kind, flags, stream);
        out.put_slice(payload);
        self.io.write_all(&out).await.unwrap();
    }

    /// The next frame, or `None` once the server closed.
    async fn frame(&mut self) -> Option<(u8, u8, u32, Bytes)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9);
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    return Some((head[3], head[4], stream, self.buf.split_to(len).freeze()));
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf))
                    .await
                    .expect("the server answers within 5 s");
            if read.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Reads frames until one of `kind` on `stream`.
    async fn until(&mut self, kind: u8, stream: u32) -> (u8, Bytes) {
        loop {
            match self.frame().await {
                Some((k, flags, s, payload)) if k == kind && s == stream => {
                    return (flags, payload)
                }
                Some(_) => {}
                None => panic!("closed before frame type {kind} on stream {stream}"),
            }
        }
    }

    /// The GOAWAY's error code, after which the server closes.
    async fn goaway(&mut self) -> u32 {
        let (_, payload) = self.until(GOAWAY, 0).await;
        while self.frame().await.is_some() {}
        u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]])
    }

    /// A request's header block, fields as literals without indexing.
    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        // A string's length: a 7-bit prefix, then 7 bits a byte.
        fn length(block: &mut Vec<u8>, huffman: u8, len: usize) {
            if len < 127 {
                block.push(huffman | len as u8);
                return;
            }
            block.push(huffman | 127);
            let mut rest = len - 127;
            while rest >= 128 {
                block.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            block.push(rest as u8);
        }
        for (name, value) in fields {
            block.push(0);
            // Names as they are, values Huffman-coded, as browsers send most.
            length(&mut block, 0, name.len());
            block.extend_from_slice(name.as_bytes());
            let coded = hpack::huffman::encode(value.as_bytes());
            length(&mut block, 0x80, coded.len());
            block.extend_from_slice(&coded);
        }
        block
    }

    fn get(path: &str) -> Vec<u8> {
        Self::block(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", path),
            (":authority", "x"),
        ])
    }
}

fn code(payload: &[u8]) -> u32 {
    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
}

#[tokio::test]
async fn control_frames_are_answered() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    raw.send(PING, 0, 0, b"12345678").await;
    assert_eq!(
        raw.until(PING, 0).await,
        (ACK, Bytes::from_static(b"12345678"))
    );
    // A header block split over HEADERS and CONTINUATION, with padding and a priority.
    let block = Raw::get("/split");
    let mut first = vec![3u8, 0, 0, 0, 0, 16];
    first.extend_from_slice(&block[..10]);
    first.extend_from_slice(&[0, 0, 0]);
    raw.send(HEADERS, END_STREAM | PADDED | PRIORITY_FLAG, 1, &first)
        .await;
    raw.send(CONTINUATION, 0, 1, &block[10..20]).await;
    raw.send(CONTINUATION, END_HEADERS, 1, &block[20..]).await;
    let (flags, _) = raw.until(HEADERS, 1).await;
    assert_eq!(flags & END_HEADERS, END_HEADERS);
    let (_, data) = raw.until(DATA, 1).await;
    assert_eq!(&data[..], b"GET /split Some(\"x\") ");
    // Unknown frame types are ignored; the connection goes on.
    raw.send(0xfa, 0, 0, b"whatever").await;
    raw.send(PING, 0, 0, b"abcdefgh").await;
    assert_eq!(raw.until(PING, 0).await.1, Bytes::from_static(b"abcdefgh"));
}

#[tokio::test]
async fn the_viewers_window_limits_what_is_sent() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    // Streams may take 100 bytes each until the viewer says more.
    raw.send(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 100]).await;
    raw.send(HEADERS, END_STREAM | END_HEADERS, 1, &Raw::get("/size/250"))
        .await;
    let mut got = 0;
    while got < 100 {
        let (_, data) = raw.until(DATA, 1).await;
        got += data.len();
    }
    assert_eq!(got, 100);
    raw.send(PING, 0, 0, b"barrier!").await;
    raw.until(PING, 0).await;
    raw.send(WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes()).await;
    let mut end = false;
    while !end {
        let (flags, data) = raw.until(DATA, 1).await;
        got += data.len();
        end = flags & END_STREAM != 0;
    }
    assert_eq!(got, 250);
}

#[tokio::test]
async fn a_reset_stream_drops_its_work_and_a_reset_flood_is_stopped() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    raw.send(HEADERS, END_STREAM | END_HEADERS, 1, &Raw::get("/hold"))
        .await;
    raw.send(PING, 0, 0, b"barrier!").await;
    raw.until(PING, 0).await;
    assert_eq!(handler.started.load(Ordering::SeqCst), 1);
    raw.send(RST_STREAM, 0, 1, &8u32.to_be_bytes()).await;
    raw.send(PING, 0, 0, b"barrier!").await;
    raw.until(PING, 0).await;
    assert_eq!(
        handler.dropped.load(Ordering::SeqCst),
        1,
        "the reset stream's work goes"
    );
    // Opening and resetting streams without ever letting one finish.
    let mut id = 3;
    for _ in 0..=RESETS_ALLOWED {
        raw.send(HEADERS, END_STREAM | END_HEADERS, id, &Raw::get("/hold"))
            .await;
        raw.send(RST_STREAM, 0, id, &8u32.to_be_bytes()).await;
        id += 2;
    }
    assert_eq!(raw.goaway().await, Code::EnhanceYourCalm as u32);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    for i in 0..=MAX_STREAMS as u32 {
        raw.send(
            HEADERS,
            END_STREAM | END_HEADERS,
            1 + 2 * i,
            &Raw::get("/hold"),
        )
        .await;
    }
    let last = 1 + 2 * MAX_STREAMS as u32;
    let (_, payload) = raw.until(RST_STREAM, last).await;
    assert_eq!(code(&payload), Code::Refused as u32);
    assert_eq!(handler.started.load(Ordering::SeqCst), MAX_STREAMS);
}

#[tokio::test]
async fn a_body_larger_than_the_window_is_answered_413() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    let head = Raw::block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/up"),
        (":authority", "x"),
    ]);
    raw.send(HEADERS, END_HEADERS, 1, &head).await;
    let chunk = vec![b'a'; 16_384];
    for _ in 0..3 {
        raw.send(DATA, 0, 1, &chunk).await;
    }
    raw.send(DATA, 0, 1, &chunk[..16_383]).await;
    let (flags, block) = raw.until(HEADERS, 1).await;
    assert_eq!(flags & END_STREAM, END_STREAM);
    assert_eq!(&block[..], &[0x08, 3, b'4', b'1', b'3']);
    let (_, payload) = raw.until(RST_STREAM, 1).await;
    assert_eq!(code(&payload), Code::NoError as u32);
    assert_eq!(handler.started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_requests_are_stream_errors() {
    let handler = Stub::default();
    let (mut raw, _task) = Raw::connect(&handler, &CancellationToken::new()).await;
    let cases: [&[(&str, &str)]; 6] = [
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("Upper", "x"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("connection", "close"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            ("te", "gzip"),
        ],
        &[(":method", "GET"), (":scheme", "https")],
        &[
            (":method", "GET"),
            ("accept", "*/*"),
            (":scheme", "https"),
            (":path", "/"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":path", "/again"),
        ],
    ];
    for (i, fields) in cases.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        raw.send(HEADERS, END_STREAM | END_HEADERS, id, &Raw::block(fields))
            .await;
        let (_, payload) = raw.until(RST_STREAM, id).await;
        assert_eq!(code(&payload), Code::Protocol as u32, "{fields:?}");
    }
    // A head over the limit is answered 431.
    let big = "v".repeat(17_000);
    let mut fields = vec![(":method", "GET"), (":scheme", "https"), (":path", "/")];
    fields.push(("x-big", &big));
    let block = Raw::block(&fields);
    raw.send(HEADERS, END_STREAM, 21, &block[..10_000]).await;
    raw.send(CONTINUATION, END_HEADERS, 21, &block[10_000..])
        .await;
    let (_, block) = raw.until(HEADERS, 21).await;
    assert_eq!(&block[..], &[0x08, 3, b'4', b'3', b'1']);
    assert_eq!(handler.started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn protocol_violations_end_the_connection_with_goaway() {
    // What is wrong, the frames (type, flags, stream, payload) and the GOAWAY's code.
    type Case = (&'static str, Vec<(u8, u8, u32, Vec<u8>)>, Code);
    let cases: [Case; 8] = [
        (
            "even stream",
            vec![(HEADERS, END_STREAM | END_HEADERS, 2, Raw::get("/"))],
            Code::Protocol,
        ),
        (
            "bad HPACK",
            vec![(HEADERS, END_STREAM | END_HEADERS, 1, vec![0x80])],
            Code::Compression,
        ),
        (
            "DATA on an idle stream",
            vec![(DATA, 0, 9, vec![1])],
            Code::Protocol,
        ),
        ("PING of 4", vec![(PING, 0, 0, vec![0; 4])], Code::FrameSize),
        (
            "CONTINUATION alone",
            vec![(CONTINUATION, END_HEADERS, 1, vec![0x82])],
            Code::Protocol,
        ),
        (
            "interrupted header block",
            vec![
                (HEADERS, END_STREAM, 1, Raw::get("/")),
                (PING, 0, 0, vec![0; 8]),
            ],
            Code::Protocol,
        ),
        (
            "window overflow",
            vec![(WINDOW_UPDATE, 0, 0, 0x7fff_ffffu32.to_be_bytes().to_vec())],
            Code::FlowControl,
        ),
        (
            "frame over 16 KiB",
            vec![(PING, 0, 0, vec![0; 16_385])],
            Code::FrameSize,
        ),
    ];
    for (what, frames, expected) in cases {
        let handler = Stub::default();
        let (mut raw, task) = Raw::connect(&handler, &CancellationToken::new()).await;
        for (kind, flags, stream, payload) in frames {
            raw.send(kind, flags, stream, &payload).await;
        }
        assert_eq!(raw.goaway().await, expected as u32, "{what}");
        assert!(task.await.unwrap().is_err(), "{what}");
    }
    // No preface at all.
    let handler = Stub::default();
    let (mut io, task) = server(&handler, &CancellationToken::new());
    io.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Raw {
        io,
        buf: BytesMut::new(),
    };
    assert_eq!(raw.goaway().await, Code::Protocol as u32);
    assert!(task.await.unwrap().is_err());
}

#[tokio::test]
async fn a_connection_without_streams_closes_after_the_idle_time_one_with_a_stream_does_not() {
    let handler = Stub::default();
    let (mut raw, task) = Raw::connect(&handler, &CancellationToken::new()).await;
    raw.send(HEADERS, END_STREAM | END_HEADERS, 1, &Raw::get("/hold"))
        .await;
    // Held well past the idle time: the open stream keeps the connection.
    tokio::time::sleep(IDLE * 3).await;
    raw.send(PING, 0, 0, b"still on").await;
    let (flags, payload) = raw.until(PING, 0).await;
    assert_eq!((flags, &payload[..]), (ACK, &b"still on"[..]));
    handler.release.notify_one();
    raw.until(DATA, 1).await;
    // Then nothing: GOAWAY without error after the idle time, and the connection ends.
    let idle_from = std::time::Instant::now();
    assert_eq!(raw.goaway().await, Code::NoError as u32);
    let waited = idle_from.elapsed();
    assert!(
        waited >= IDLE - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    task.await.unwrap().unwrap();
}
