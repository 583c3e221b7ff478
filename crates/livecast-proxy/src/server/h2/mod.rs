//! The balancer's own HTTP/2 server (RFC 9113) for viewers over TLS. One task per connection
//! reads frames, decodes each request's head into the same `http::Request` the policy takes
//! everywhere ([`super::hyper::handle`]), runs the requests as futures inside that task, and
//! writes each answer's head and body back as frames, all of a turn's frames in one write.
//!
//! What it keeps small compared to a general HTTP/2 library: answers' heads are encoded
//! without a dynamic table or Huffman coding ([`hpack`]), a stream is an entry in a short
//! vector, and DATA frames are cut straight from the front-end's body chunks. What it does not
//! do: server push, priorities (streams share the connection's window in turn), request
//! bodies larger than one stream window (64 KiB; a viewer's requests are GETs, and a larger
//! body is answered 413 as soon as the window is used up).

pub(crate) mod hpack;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Full;
use livecast_telemetry::CancellationToken;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Connections;
use crate::client::{Body, Upstreams};
use crate::forward::Forwarder;

/// The connection preface every client starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Code {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    Refused = 0x7,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// The largest frame payload this end takes (the protocol's default; never raised).
const MAX_FRAME: usize = 16_384;
/// The window every flow-control count starts from (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Streams a viewer may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub(crate) const MAX_STREAMS: usize = 100;
/// The HPACK table this end keeps for the viewer's encoder (the default, not changed).
const TABLE_SIZE: usize = 4096;
/// How much of one answer's body may wait here for window and for the socket: each stream
/// reads its answer that far ahead from its front-end.
const SEND_BUFFER_PER_STREAM: usize = 160 * 1024;
/// Frames waiting to be written past which the connection stops cutting DATA frames (they go
/// out first) and, at four times that, stops reading the viewer's frames (so a flood of PINGs
/// or SETTINGS from a viewer that does not read cannot grow it without bound).
const OUT_HIGH: usize = 64 * 1024;
/// A viewer that resets more streams than it lets finish, past this many, is told to stop.
const RESETS_ALLOWED: u32 = 100;
/// How long a connection that failed gets to write its GOAWAY before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A connection-level failure: GOAWAY with `code`, then close.
#[derive(Debug)]
struct ConnError(Code, &'static str);

/// Serves one HTTP/2 viewer connection until it ends. On shutdown, GOAWAY tells the viewer
/// to open no new streams; the ones in flight finish.
pub(super) async fn serve<I>(
    io: I,
    peer: SocketAddr,
    connections: &Connections,
    upstreams: &Arc<Upstreams>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let handler = {
        let forwarder = connections.forwarder.clone();
        let upstreams = upstreams.clone();
        move |request: Request<Full<Bytes>>| {
            let forwarder: Arc<Forwarder> = forwarder.clone();
            let upstreams = upstreams.clone();
            async move { super::hyper::handle(&forwarder, request, peer, true, &upstreams).await }
        }
    };
    let shared = &connections.shared;
    // The keep-alive idle time of HTTP/1.1 applies to a connection with no stream open.
    let mut conn = Conn::new(shared.max_header_bytes, shared.header_timeout);
    if let Err(error) = conn.run(io, &shared.shutdown, handler).await {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// What answers a stream's request: the balancer's request policy, or a stand-in in tests.
trait Handler {
    type Answer: Future<Output = Response<Body>> + Send + 'static;
    fn call(&self, request: Request<Full<Bytes>>) -> Self::Answer;
}

impl<H, F> Handler for H
where
    H: Fn(Request<Full<Bytes>>) -> F,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    type Answer = F;
    fn call(&self, request: Request<Full<Bytes>>) -> F {
        self(request)
    }
}

/// One stream this end still has work for.
struct Stream {
    id: u32,
    /// What the viewer's window lets this end send on the stream.
    send_window: i64,
    /// An answer to a HEAD has no body, whatever its length says.
    head: bool,
    phase: Phase,
}

enum Phase {
    /// The head has arrived, the body has not ended yet.
    Receiving {
        /// Boxed: the other phases are much smaller.
        request: Box<Request<()>>,
        body: BytesMut,
        window: i64,
    },
    /// The policy and the front-end are working on the answer.
    Waiting(AbortHandle),
    /// The answer's head is out; its body goes out as DATA frames.
    Sending {
        body: Option<Body>,
        queue: VecDeque<Bytes>,
        queued: usize,
    },
}

/// A header block spread over HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: BytesMut,
}

struct Conn {
    read: BytesMut,
    out: BytesMut,
    preface: bool,
    settings_seen: bool,
    decoder: hpack::Decoder,
    partial: Option<Partial>,
    /// The viewer's settings.
    max_frame: usize,
    initial_window: i64,
    send_window: i64,
    streams: Vec<Stream>,
    /// The highest stream the viewer opened.
    last_id: u32,
    /// Set once GOAWAY went out: no stream above it is served.
    goaway: Option<u32>,
    /// The viewer said GOAWAY: it opens nothing more.
    peer_done: bool,
    resets: u32,
    answered: u32,
    next_turn: usize,
    max_header_bytes: usize,
    /// How long the connection may have no stream open before it is closed (GOAWAY, no
    /// error).
    idle_timeout: Duration,
    /// Since when no stream has been open (`None` while one is).
    idle_since: Option<tokio::time::Instant>,
}

/// The answers being worked on, each with its stream's id.
type Working =
    FuturesUnordered<Abortable<Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send>>>>;

impl Conn {
    fn new(max_header_bytes: usize, idle_timeout: Duration) -> Self {
        Self {
            read: BytesMut::with_capacity(MAX_FRAME + 9),
            out: BytesMut::with_capacity(MAX_FRAME + 9),
            preface: false,
            settings_seen: false,
            decoder: hpack::Decoder::new(TABLE_SIZE),
            partial: None,
            max_frame: MAX_FRAME,
            initial_window: DEFAULT_WINDOW,
            send_window: DEFAULT_WINDOW,
            streams: Vec::new(),
            last_id: 0,
            goaway: None,
            peer_done: false,
            resets: 0,
            answered: 0,
            next_turn: 0,
            max_header_bytes,
            idle_timeout,
            idle_since: Some(tokio::time::Instant::now()),
        }
    }

    async fn run<I, H: Handler>(
        &mut self,
        mut io: I,
        shutdown: &CancellationToken,
        handler: H,
    ) -> Result<(), std::io::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        // This end's settings; the windows stay at their defaults.
        let settings = [
            (0x3u16, MAX_STREAMS as u32),
            (
                0x6,
                u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX),
            ),
        ];
        frame_head(&mut self.out, settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            self.out.put_u16(id);
            self.out.put_u32(value);
        }
        let mut working: Working = FuturesUnordered::new();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // One timer, set again only when it fires: streams opening and closing cost none.
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let result = std::future::poll_fn(|cx| {
            if self.goaway.is_none() && cancelled.as_mut().poll(cx).is_ready() {
                self.go_away(Code::NoError);
            }
            while self.goaway.is_none() && idle.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                match self.idle_since {
                    Some(since) if since + self.idle_timeout <= now => self.go_away(Code::NoError),
                    since => idle
                        .as_mut()
                        .reset(since.unwrap_or(now) + self.idle_timeout),
                }
            }
            let turn = self.turn(cx, &mut io, &mut working, &handler);
            match turn {
                Poll::Ready(Err(Failure::Conn(e))) => Poll::Ready(Err(e)),
                Poll::Ready(Err(Failure::Io(e))) => Poll::Ready(Ok(Err(e))),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(Ok(()))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match result {
            Ok(done) => done,
            Err(ConnError(code, why)) => {
                // Tell the viewer why, if it reads in time.
                self.out.clear();
                self.go_away(code);
                let out = std::mem::take(&mut self.out);
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    use tokio::io::AsyncWriteExt;
                    io.write_all(&out).await?;
                    io.shutdown().await
                })
                .await;
                Err(std::io::Error::other(format!("HTTP/2 {code:?}: {why}")))
            }
        }
    }

    /// One turn: read and act on what the viewer sent, move the answers on, write.
    fn turn<I, H: Handler>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        working: &mut Working,
        handler: &H,
    ) -> Poll<Result<(), Failure>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let mut progress = false;
            // Read while what waits to be written is not piling up.
            if self.out.len() < 4 * OUT_HIGH {
                match self.poll_read(cx, io) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(_)) => {
                        self.frames(working, handler).map_err(Failure::Conn)?;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Io(e))),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some(done)) = working.poll_next_unpin(cx) {
                if let Ok((id, response)) = done {
                    self.answer(id, response);
                }
            }
            self.pull_bodies(cx);
            self.send_data();
            match self.poll_write(cx, io) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Io(e))),
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Pending => {}
            }
            if self.out.is_empty() && self.finished() {
                return match Pin::new(&mut *io).poll_shutdown(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Whether nothing is left to do: GOAWAY went out (or the viewer sent one) and every
    /// stream is done.
    fn finished(&self) -> bool {
        (self.goaway.is_some() || self.peer_done) && self.streams.is_empty()
    }

    fn poll_read<I: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
    ) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(MAX_FRAME + 9);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.read)
    }

    /// Writes out what waits; `Ok(true)` when some of it went.
    fn poll_write<I: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
    ) -> Poll<std::io::Result<bool>> {
        let mut wrote = false;
        while !self.out.is_empty() {
            match Pin::new(&mut *io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return if wrote {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    }
                }
            }
        }
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(wrote)),
        }
    }

    /// Acts on every whole frame read so far.
    fn frames<H: Handler>(&mut self, working: &mut Working, handler: &H) -> Result<(), ConnError> {
        if !self.preface {
            if self.read.len() < PREFACE.len() {
                return if PREFACE.starts_with(&self.read) {
                    Ok(())
                } else {
                    Err(ConnError(Code::Protocol, "no connection preface"))
                };
            }
            if !self.read.starts_with(PREFACE) {
                return Err(ConnError(Code::Protocol, "no connection preface"));
            }
            self.read.advance(PREFACE.len());
            self.preface = true;
        }
        while self.read.len() >= 9 {
            let len = usize::from(self.read[0]) << 16
                | usize::from(self.read[1]) << 8
                | usize::from(self.read[2]);
            if len > MAX_FRAME {
                return Err(ConnError(
                    Code::FrameSize,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if self.read.len() < 9 + len {
                break;
            }
            let (kind, flags) = (self.read[3], self.read[4]);
            let stream =
                u32::from_be_bytes([self.read[5], self.read[6], self.read[7], self.read[8]])
                    & 0x7fff_ffff;
            self.read.advance(9);
            let payload = self.read.split_to(len).freeze();
            if !self.settings_seen && kind != SETTINGS {
                return Err(ConnError(Code::Protocol, "first frame is not SETTINGS"));
            }
            if self.partial.is_some() && kind != CONTINUATION {
                return Err(ConnError(Code::Protocol, "header block interrupted"));
            }
            match kind {
                DATA => self.on_data(stream, flags, payload, working, handler)?,
                HEADERS => self.on_headers(stream, flags, payload, working, handler)?,
                CONTINUATION => self.on_continuation(stream, flags, payload, working, handler)?,
                PRIORITY => {
                    if stream == 0 {
                        return Err(ConnError(Code::Protocol, "PRIORITY on stream 0"));
                    }
                    if payload.len() != 5 {
                        self.reset(stream, Code::FrameSize);
                    } else if dependency(&payload) == stream {
                        self.reset(stream, Code::Protocol);
                    }
                }
                RST_STREAM => self.on_reset(stream, &payload)?,
                SETTINGS => self.on_settings(stream, flags, &payload)?,
                PUSH_PROMISE => {
                    return Err(ConnError(Code::Protocol, "PUSH_PROMISE from a client"))
                }
                PING => {
                    if stream != 0 {
                        return Err(ConnError(Code::Protocol, "PING on a stream"));
                    }
                    if payload.len() != 8 {
                        return Err(ConnError(Code::FrameSize, "PING of the wrong size"));
                    }
                    if flags & ACK == 0 {
                        frame_head(&mut self.out, 8, PING, ACK, 0);
                        self.out.put_slice(&payload);
                    }
                }
                GOAWAY => {
                    if stream != 0 {
                        return Err(ConnError(Code::Protocol, "GOAWAY on a stream"));
                    }
                    self.peer_done = true;
                }
                WINDOW_UPDATE => self.on_window_update(stream, &payload)?,
                // Unknown frame types are ignored (RFC 9113 §4.1).
                _ => {}
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, stream: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if stream != 0 {
            return Err(ConnError(Code::Protocol, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(ConnError(Code::FrameSize, "SETTINGS ACK with a payload"));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnError(Code::FrameSize, "SETTINGS of the wrong size"));
        }
        self.settings_seen = true;
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                // ENABLE_PUSH: this end never pushes, but the value must be a boolean.
                0x2 if value > 1 => {
                    return Err(ConnError(Code::Protocol, "SETTINGS_ENABLE_PUSH not 0 or 1"))
                }
                0x4 => {
                    let value = i64::from(value);
                    if value > MAX_WINDOW {
                        return Err(ConnError(
                            Code::FlowControl,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value - self.initial_window;
                    self.initial_window = value;
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(ConnError(Code::FlowControl, "stream window past 2^31-1"));
                        }
                    }
                }
                0x5 => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(ConnError(
                            Code::Protocol,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.max_frame = value as usize;
                }
                // HEADER_TABLE_SIZE concerns an encoder with a dynamic table, which this end's
                // is not; the others do not concern a server.
                _ => {}
            }
        }
        frame_head(&mut self.out, 0, SETTINGS, ACK, 0);
        Ok(())
    }

    fn on_window_update(&mut self, stream: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(
                Code::FrameSize,
                "WINDOW_UPDATE of the wrong size",
            ));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if stream == 0 {
            if increment == 0 {
                return Err(ConnError(Code::Protocol, "WINDOW_UPDATE of 0"));
            }
            self.send_window += increment;
            if self.send_window > MAX_WINDOW {
                return Err(ConnError(
                    Code::FlowControl,
                    "connection window past 2^31-1",
                ));
            }
            return Ok(());
        }
        if stream > self.last_id {
            return Err(ConnError(Code::Protocol, "WINDOW_UPDATE on an idle stream"));
        }
        let Some(at) = self.find(stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(stream, Code::Protocol);
            return Ok(());
        }
        self.streams[at].send_window += increment;
        if self.streams[at].send_window > MAX_WINDOW {
            self.reset(stream, Code::FlowControl);
        }
        Ok(())
    }

    fn on_reset(&mut self, stream: u32, payload: &[u8]) -> Result<(), ConnError> {
        if stream == 0 {
            return Err(ConnError(Code::Protocol, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(ConnError(Code::FrameSize, "RST_STREAM of the wrong size"));
        }
        if stream > self.last_id {
            return Err(ConnError(Code::Protocol, "RST_STREAM on an idle stream"));
        }
        if let Some(at) = self.find(stream) {
            self.remove(at);
            self.resets += 1;
            if self.resets > RESETS_ALLOWED && self.resets > self.answered {
                return Err(ConnError(
                    Code::EnhanceYourCalm,
                    "more streams reset than answered",
                ));
            }
        }
        Ok(())
    }

    fn on_data<H: Handler>(
        &mut self,
        stream: u32,
        flags: u8,
        payload: Bytes,
        working: &mut Working,
        handler: &H,
    ) -> Result<(), ConnError> {
        if stream == 0 {
            return Err(ConnError(Code::Protocol, "DATA on stream 0"));
        }
        if stream > self.last_id {
            return Err(ConnError(Code::Protocol, "DATA on an idle stream"));
        }
        // The whole frame counts against the windows, padding included; the connection's is
        // given back at once (each stream's own window bounds what it holds).
        let counted = payload.len();
        if counted > 0 {
            window_update(&mut self.out, 0, counted as u32);
        }
        let data = unpad(flags, payload)?;
        let at = match self.find(stream) {
            Some(at) if matches!(self.streams[at].phase, Phase::Receiving { .. }) => at,
            _ => {
                self.reset(stream, Code::StreamClosed);
                return Ok(());
            }
        };
        let Phase::Receiving { body, window, .. } = &mut self.streams[at].phase else {
            return Ok(());
        };
        *window -= counted as i64;
        if *window < 0 {
            self.reset(stream, Code::FlowControl);
            return Ok(());
        }
        body.put_slice(&data);
        let exhausted = *window == 0;
        if flags & END_STREAM != 0 {
            self.start(at, working, handler);
        } else if exhausted {
            // A body this end will not take whole: answer now, and stop the rest of it.
            self.streams[at].phase = Phase::Waiting(AbortHandle::new_pair().0);
            self.refuse(stream, StatusCode::PAYLOAD_TOO_LARGE, false);
        }
        Ok(())
    }

    fn on_headers<H: Handler>(
        &mut self,
        stream: u32,
        flags: u8,
        payload: Bytes,
        working: &mut Working,
        handler: &H,
    ) -> Result<(), ConnError> {
        if stream == 0 || stream.is_multiple_of(2) {
            return Err(ConnError(
                Code::Protocol,
                "HEADERS on stream 0 or an even stream",
            ));
        }
        let mut fragment = unpad(flags, payload)?;
        let mut self_dependent = false;
        if flags & PRIORITY_FLAG != 0 {
            if fragment.len() < 5 {
                return Err(ConnError(
                    Code::FrameSize,
                    "HEADERS too short for its priority",
                ));
            }
            // A stream depending on itself is refused, after its block has been decoded to
            // keep the table in step.
            self_dependent = dependency(&fragment) == stream;
            fragment.advance(5);
        }
        let partial = Partial {
            stream,
            end_stream: flags & END_STREAM != 0,
            self_dependent,
            block: BytesMut::from(&fragment[..]),
        };
        if flags & END_HEADERS == 0 {
            self.partial = Some(partial);
            return Ok(());
        }
        self.header_block(partial, working, handler)
    }

    fn on_continuation<H: Handler>(
        &mut self,
        stream: u32,
        flags: u8,
        payload: Bytes,
        working: &mut Working,
        handler: &H,
    ) -> Result<(), ConnError> {
        let Some(mut partial) = self.partial.take() else {
            return Err(ConnError(Code::Protocol, "CONTINUATION without HEADERS"));
        };
        if partial.stream != stream {
            return Err(ConnError(Code::Protocol, "CONTINUATION on another stream"));
        }
        partial.block.put_slice(&payload);
        // A block this large is no viewer's request: stop before holding more of it.
        if partial.block.len() > self.max_header_bytes + MAX_FRAME {
            return Err(ConnError(Code::EnhanceYourCalm, "header block too large"));
        }
        if flags & END_HEADERS == 0 {
            self.partial = Some(partial);
            return Ok(());
        }
        self.header_block(partial, working, handler)
    }

    /// A whole header block: a new request, or the trailers of one still sending its body.
    fn header_block<H: Handler>(
        &mut self,
        partial: Partial,
        working: &mut Working,
        handler: &H,
    ) -> Result<(), ConnError> {
        let Partial {
            stream,
            end_stream,
            self_dependent,
            block,
        } = partial;
        let mut head = HeadBuilder::new(self.max_header_bytes);
        self.decoder
            .decode(&block, |name, value| head.field(name, value))
            .map_err(|e| ConnError(Code::Compression, e.0))?;
        if stream <= self.last_id {
            // Trailers: allowed only on a stream whose body has not ended, and only to end it.
            return match self.find(stream) {
                Some(at) if matches!(self.streams[at].phase, Phase::Receiving { .. }) => {
                    if end_stream {
                        self.start(at, working, handler);
                    } else {
                        self.reset(stream, Code::Protocol);
                    }
                    Ok(())
                }
                Some(_) => {
                    self.reset(stream, Code::StreamClosed);
                    Ok(())
                }
                None => Err(ConnError(Code::StreamClosed, "HEADERS on a closed stream")),
            };
        }
        self.last_id = stream;
        if self_dependent {
            self.reset(stream, Code::Protocol);
            return Ok(());
        }
        if self.goaway.is_some() {
            // Above the GOAWAY's last stream: not served, as the viewer was told.
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            self.reset(stream, Code::Refused);
            return Ok(());
        }
        let request = match head.finish() {
            Ok(request) => request,
            Err(Malformed::Protocol) => {
                self.reset(stream, Code::Protocol);
                return Ok(());
            }
            Err(Malformed::TooLarge) => {
                self.streams.push(Stream {
                    id: stream,
                    send_window: self.initial_window,
                    head: false,
                    phase: Phase::Waiting(AbortHandle::new_pair().0),
                });
                self.idle_since = None;
                self.refuse(
                    stream,
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    end_stream,
                );
                return Ok(());
            }
        };
        self.streams.push(Stream {
            id: stream,
            send_window: self.initial_window,
            head: request.method() == Method::HEAD,
            phase: Phase::Receiving {
                request: Box::new(request),
                body: BytesMut::new(),
                window: DEFAULT_WINDOW,
            },
        });
        self.idle_since = None;
        if end_stream {
            let at = self.streams.len() - 1;
            self.start(at, working, handler);
        }
        Ok(())
    }

    /// The request on `self.streams[at]` is whole: hands it to the policy.
    fn start<H: Handler>(&mut self, at: usize, working: &mut Working, handler: &H) {
        let (abort, registration) = AbortHandle::new_pair();
        let stream = &mut self.streams[at];
        let Phase::Receiving { request, body, .. } =
            std::mem::replace(&mut stream.phase, Phase::Waiting(abort))
        else {
            return;
        };
        let id = stream.id;
        let answer = handler.call(request.map(|()| Full::new(body.freeze())));
        let future: Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send>> =
            Box::pin(async move { (id, answer.await) });
        working.push(Abortable::new(future, registration));
    }

    /// Writes the answer's head for stream `id`, and keeps its body to send.
    fn answer(&mut self, id: u32, response: Response<Body>) {
        let Some(at) = self.find(id) else {
            return;
        };
        let (parts, body) = response.into_parts();
        let stream = &mut self.streams[at];
        let bodiless = stream.head
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || body.is_end_stream();
        headers_frames(&mut self.out, id, bodiless, self.max_frame, |block| {
            hpack::encode_response(parts.status, &parts.headers, block)
        });
        if bodiless {
            self.remove(at);
            self.answered += 1;
        } else {
            stream.phase = Phase::Sending {
                body: Some(body),
                queue: VecDeque::new(),
                queued: 0,
            };
        }
    }

    /// Answers `id` with `status` alone; RST_STREAM(NO_ERROR) then tells a viewer still sending
    /// its body to stop (RFC 9113 §8.1).
    fn refuse(&mut self, id: u32, status: StatusCode, request_ended: bool) {
        let mut response = Response::new(Body::default());
        *response.status_mut() = status;
        self.answer(id, response);
        if !request_ended {
            frame_head(&mut self.out, 4, RST_STREAM, 0, id);
            self.out.put_u32(Code::NoError as u32);
        }
    }

    /// Reads the answers' bodies ahead, each up to its buffer.
    fn pull_bodies(&mut self, cx: &mut Context<'_>) {
        let mut failed = Vec::new();
        for s in &mut self.streams {
            let Phase::Sending {
                body: slot,
                queue,
                queued,
            } = &mut s.phase
            else {
                continue;
            };
            let Some(body) = slot else {
                continue;
            };
            let mut ended = false;
            while *queued < SEND_BUFFER_PER_STREAM {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers from a front-end are not passed on.
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                *queued += data.len();
                                queue.push_back(data);
                            }
                        }
                        if body.is_end_stream() {
                            ended = true;
                            break;
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(%error, "a front-end's answer broke off");
                        failed.push(s.id);
                        break;
                    }
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if ended {
                *slot = None;
            }
        }
        for id in failed {
            self.reset(id, Code::Internal);
        }
    }

    /// Cuts DATA frames from the streams' queues, one frame per stream in turn, as far as the
    /// windows and the output buffer allow.
    fn send_data(&mut self) {
        loop {
            let mut sent_any = false;
            let count = self.streams.len();
            let mut i = 0;
            while i < count.min(self.streams.len()) && self.out.len() < OUT_HIGH {
                let at = (self.next_turn + i) % self.streams.len();
                i += 1;
                let s = &mut self.streams[at];
                let Phase::Sending {
                    body,
                    queue,
                    queued,
                } = &mut s.phase
                else {
                    continue;
                };
                let last = match queue.front_mut() {
                    // Everything went: end the stream.
                    None if body.is_none() => {
                        frame_head(&mut self.out, 0, DATA, END_STREAM, s.id);
                        true
                    }
                    None => continue,
                    Some(chunk) => {
                        let allowed = self.send_window.min(s.send_window);
                        if allowed <= 0 {
                            continue;
                        }
                        let n = chunk.len().min(self.max_frame).min(allowed as usize);
                        let piece = chunk.split_to(n);
                        if chunk.is_empty() {
                            queue.pop_front();
                        }
                        *queued -= n;
                        let last = queue.is_empty() && body.is_none();
                        let flags = if last { END_STREAM } else { 0 };
                        frame_head(&mut self.out, n, DATA, flags, s.id);
                        self.out.put_slice(&piece);
                        s.send_window -= n as i64;
                        self.send_window -= n as i64;
                        last
                    }
                };
                sent_any = true;
                if last {
                    self.remove(at);
                    self.answered += 1;
                }
            }
            if !self.streams.is_empty() {
                self.next_turn = (self.next_turn + 1) % self.streams.len();
            }
            if !sent_any || self.out.len() >= OUT_HIGH {
                return;
            }
        }
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    /// Forgets a stream; an answer still being worked on is dropped.
    fn remove(&mut self, at: usize) {
        let stream = self.streams.swap_remove(at);
        if self.streams.is_empty() {
            self.idle_since = Some(tokio::time::Instant::now());
        }
        if let Phase::Waiting(abort) = stream.phase {
            abort.abort();
        }
    }

    /// Ends a stream with RST_STREAM.
    fn reset(&mut self, id: u32, code: Code) {
        frame_head(&mut self.out, 4, RST_STREAM, 0, id);
        self.out.put_u32(code as u32);
        if let Some(at) = self.find(id) {
            self.remove(at);
        }
    }

    fn go_away(&mut self, code: Code) {
        let last = self.last_id;
        self.goaway = Some(last);
        frame_head(&mut self.out, 8, GOAWAY, 0, 0);
        self.out.put_u32(last);
        self.out.put_u32(code as u32);
    }
}

enum Failure {
    Conn(ConnError),
    Io(std::io::Error),
}

/// A request's head as its fields arrive.
struct HeadBuilder {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    regular: bool,
    size: usize,
    limit: usize,
    malformed: Option<Malformed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// Broken rules of RFC 9113 §8.3: a stream error.
    Protocol,
    /// More than the balancer's limit on a request head: answered 431.
    TooLarge,
}

impl HeadBuilder {
    fn new(limit: usize) -> Self {
        Self {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: HeaderMap::new(),
            regular: false,
            size: 0,
            limit,
            malformed: None,
        }
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.malformed.is_some() {
            return;
        }
        self.size += name.len() + value.len() + 32;
        if self.size > self.limit {
            self.malformed = Some(Malformed::TooLarge);
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            let slot = match pseudo {
                _ if self.regular => None,
                b"method" if self.method.is_none() => {
                    self.method = Method::from_bytes(value).ok();
                    if self.method.is_none() {
                        self.malformed = Some(Malformed::Protocol);
                    }
                    return;
                }
                b"scheme" => Some(&mut self.scheme),
                b"authority" => Some(&mut self.authority),
                b"path" => Some(&mut self.path),
                _ => None,
            };
            match slot {
                Some(slot) if slot.is_none() => *slot = Some(Bytes::copy_from_slice(value)),
                _ => self.malformed = Some(Malformed::Protocol),
            }
            return;
        }
        self.regular = true;
        // Names are lower case in HTTP/2; connection-specific fields are not carried.
        let name = match HeaderName::from_bytes(name) {
            Ok(n)
                if !name.iter().any(u8::is_ascii_uppercase)
                    && !hpack::is_connection_specific(&n) =>
            {
                n
            }
            _ => {
                self.malformed = Some(Malformed::Protocol);
                return;
            }
        };
        if name == header::TE && value != b"trailers" {
            self.malformed = Some(Malformed::Protocol);
            return;
        }
        match HeaderValue::from_bytes(value) {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(_) => self.malformed = Some(Malformed::Protocol),
        }
    }

    fn finish(self) -> Result<Request<()>, Malformed> {
        if let Some(m) = self.malformed {
            return Err(m);
        }
        let (Some(method), Some(scheme), Some(path)) = (self.method, self.scheme, self.path) else {
            // CONNECT (no :scheme, no :path) is not something a balancer of HLS forwards.
            return Err(Malformed::Protocol);
        };
        if path.is_empty() || method == Method::CONNECT {
            return Err(Malformed::Protocol);
        }
        let mut parts = http::uri::Parts::default();
        parts.path_and_query =
            Some(PathAndQuery::from_maybe_shared(path).map_err(|_| Malformed::Protocol)?);
        if let Some(authority) = self.authority {
            parts.scheme = Some(Scheme::try_from(&scheme[..]).map_err(|_| Malformed::Protocol)?);
            parts.authority =
                Some(Authority::from_maybe_shared(authority).map_err(|_| Malformed::Protocol)?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| Malformed::Protocol)?;
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Ok(request)
    }
}

/// The stream a PRIORITY (or HEADERS with priority) payload depends on.
fn dependency(payload: &[u8]) -> u32 {
    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff
}

/// A payload without its padding (RFC 9113 §6.1).
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, ConnError> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(ConnError(
            Code::FrameSize,
            "padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(ConnError(Code::Protocol, "padding as long as the frame"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

fn window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    frame_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment);
}

/// An answer's head as HEADERS (the block `encode` writes, encoded in place after the frame's
/// head), then CONTINUATION frames if it is larger than one frame.
fn headers_frames(
    out: &mut BytesMut,
    id: u32,
    end_stream: bool,
    max_frame: usize,
    encode: impl FnOnce(&mut BytesMut),
) {
    let end = if end_stream { END_STREAM } else { 0 };
    let start = out.len();
    frame_head(out, 0, HEADERS, END_HEADERS | end, id);
    encode(out);
    let len = out.len() - start - 9;
    if len <= max_frame {
        out[start..start + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        return;
    }
    // Rare: a head larger than a frame is cut into HEADERS and CONTINUATIONs.
    let mut block = out.split_off(start + 9);
    out.truncate(start);
    let mut kind = HEADERS;
    loop {
        let n = block.len().min(max_frame);
        let piece = block.split_to(n);
        let flags =
            if block.is_empty() { END_HEADERS } else { 0 } | if kind == HEADERS { end } else { 0 };
        frame_head(out, n, kind, flags, id);
        out.put_slice(&piece);
        if block.is_empty() {
            return;
        }
        kind = CONTINUATION;
    }
}

#[cfg(test)]
mod tests;
