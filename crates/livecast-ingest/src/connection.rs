//! One RTMP connection: handshake, our chunk layer, the command session (rml_rtmp, fed whole
//! messages), media to the pipeline, and admission of a publish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livecast_telemetry::CancellationToken;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use livecast_media::publish::split_rendition;

use crate::chunk::{self, single_chunk, ChunkReader, Message};
use crate::error::ConnectionError;
use crate::pipeline::{MediaMessage, Pipeline};
use crate::shared::Shared;

/// The only RTMP application; publishers use rtmp://HOST/live/<stream>.
pub(crate) const APP: &str = "live";
/// The log target of the publish audit trail (filter with `RUST_LOG=livecast::audit=info`).
pub(crate) const AUDIT: &str = "livecast::audit";
/// The audit result of a publish that was let in.
const ACCEPTED: &str = "accepted";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Protocol control message types handled here rather than by the session.
const ACKNOWLEDGEMENT: u8 = 3;
const WINDOW_ACK_SIZE: u8 = 5;

/// What an RTMP connection reads from and writes to: TCP, or TLS over TCP for RTMPS.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Reads what has already arrived without waiting; 0 when nothing has, or when the
    /// transport cannot tell.
    fn read_arrived(&self, _buf: &mut [u8]) -> usize {
        0
    }
}

impl Transport for TcpStream {
    fn read_arrived(&self, buf: &mut [u8]) -> usize {
        rustix::net::recv(self, buf, RecvFlags::DONTWAIT).map_or(0, |(n, _)| n)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}

/// Serves one connection; with `tls`, the TLS handshake comes first (RTMPS).
pub(crate) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let scheme = if tls.is_some() { "rtmps" } else { "rtmp" };
    let span = tracing::info_span!("rtmp", %peer, scheme, stream = tracing::field::Empty);
    async move {
        tracing::debug!("connection accepted");
        let _ = socket.set_nodelay(true);
        let outcome = match tls {
            None => {
                Connection::new(socket, peer, shared.clone())
                    .run(shutdown)
                    .await
            }
            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                Ok(Ok(socket)) => {
                    Connection::new(socket, peer, shared.clone())
                        .run(shutdown)
                        .await
                }
                Ok(Err(error)) => {
                    tracing::info!(%error, "tls handshake failed");
                    Err(ConnectionError::Refused("tls_handshake"))
                }
                Err(_) => Err(ConnectionError::Refused("handshake_timeout")),
            },
        };
        match outcome {
            Ok(()) => tracing::debug!("connection closed"),
            Err(ConnectionError::Refused(reason)) => {
                shared.metrics.rejected.with_label_values(&[reason]).inc();
                tracing::warn!(reason, "connection refused");
            }
            Err(error) => {
                shared
                    .metrics
                    .rejected
                    .with_label_values(&["protocol"])
                    .inc();
                tracing::info!(%error, "connection ended");
            }
        }
    }
    .instrument(span)
    .await
}

/// A publish in progress. Its pipeline runs on the connection's task: media read from the
/// socket is packaged and written before the next read, so a slow disk pushes back on the
/// publisher through TCP instead of queueing, and no message costs a hand-off to another task.
struct Publish {
    stream: String,
    pipeline: Option<Pipeline>,
    /// The server-side ladder's feed (`--ladder`); dropping it stops the transcoder.
    ladder: Option<crate::ladder::LadderFeed>,
}

impl Drop for Publish {
    /// However the publish ends (unpublish, disconnect, error, shutdown), its playlist ends.
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.close();
        }
    }
}

struct Connection<S> {
    socket: S,
    peer: SocketAddr,
    /// Last sign of life: any data before a publish, media once publishing.
    activity: Instant,
    /// The peer's acknowledgement window, bytes received and bytes acknowledged (wrapping).
    window: Option<u32>,
    received: u32,
    acknowledged: u32,
    shared: Arc<Shared>,
    publish: Option<Publish>,
    buf: Vec<u8>,
}

impl<S: Transport> Connection<S> {
    fn new(socket: S, peer: SocketAddr, shared: Arc<Shared>) -> Self {
        Self {
            socket,
            peer,
            activity: Instant::now(),
            window: None,
            received: 0,
            acknowledged: 0,
            shared,
            publish: None,
            buf: vec![0; 64 * 1024],
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> Result<(), ConnectionError> {
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| ConnectionError::Refused("handshake_timeout"))??;
        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())?;
        self.handle(&mut session, initial).await?;
        // rml_rtmp handles commands only. Messages reach it whole, one chunk each, so it must
        // accept chunks as long as any message.
        let mut normalized = Vec::new();
        single_chunk(
            &Message {
                csid: 2,
                type_id: chunk::SET_CHUNK_SIZE,
                stream_id: 0,
                timestamp: 0,
                payload: (chunk::MAX_CHUNK_SIZE as u32).to_be_bytes().to_vec(),
            },
            &mut normalized,
        );
        let results = session.handle_input(&normalized)?;
        self.handle(&mut session, results).await?;
        let mut reader = ChunkReader::new();
        reader.push(&leftover);
        self.process(&mut reader, &mut session).await?;
        let idle = Duration::from_secs(self.shared.config.idle_timeout_secs);
        // Silence is checked eight times per idle period: a timer armed for every read would
        // cost more than the read's own bookkeeping.
        let mut check = tokio::time::interval(idle / 8);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = check.tick() => {
                    // Before a publish any data keeps the connection; once publishing, only
                    // media does.
                    if self.activity.elapsed() >= idle {
                        return Err(ConnectionError::Idle(idle.as_secs()));
                    }
                    continue;
                }
                read = self.socket.read(&mut self.buf) => read?,
            };
            if n == 0 {
                break;
            }
            let mut n = n;
            if n < self.buf.len() {
                // Publishers write a message's header and body separately with Nagle's
                // algorithm on: the body leaves once the read of the header acknowledged it,
                // and from a near publisher it is here before that read returns. Taking it now
                // saves a trip through the event loop; nothing there costs one more call.
                n += self.socket.read_arrived(&mut self.buf[n..]);
            }
            self.shared.metrics.received_bytes.inc_by(n as u64);
            if self.publish.is_none() {
                self.activity = Instant::now();
            }
            self.received = self.received.wrapping_add(n as u32);
            reader.push(&self.buf[..n]);
            self.process(&mut reader, &mut session).await?;
            self.acknowledge().await?;
        }
        // Dropping the publish closes its pipeline, which writes ENDLIST.
        self.publish = None;
        Ok(())
    }

    /// Takes every whole message out of the chunk reader: media goes to the pipeline, the
    /// window size is kept for acknowledgements, everything else goes to the session.
    async fn process(
        &mut self,
        reader: &mut ChunkReader,
        session: &mut ServerSession,
    ) -> Result<(), ConnectionError> {
        let mut normalized = Vec::new();
        while let Some(message) = reader.next_message()? {
            match message.type_id {
                chunk::AUDIO => {
                    let media = MediaMessage::Audio(message.timestamp, message.payload.into());
                    self.forward(media);
                }
                chunk::VIDEO => {
                    let media = MediaMessage::Video(message.timestamp, message.payload.into());
                    self.forward(media);
                }
                WINDOW_ACK_SIZE => {
                    if let Some(size) = message.payload.get(..4) {
                        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                        self.window = (size > 0).then_some(size);
                    }
                }
                _ => {
                    normalized.clear();
                    single_chunk(&message, &mut normalized);
                    let results = session.handle_input(&normalized)?;
                    self.handle(session, results).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends an Acknowledgement each time the peer's window of bytes has been received.
    async fn acknowledge(&mut self) -> Result<(), ConnectionError> {
        let Some(window) = self.window else {
            return Ok(());
        };
        if self.received.wrapping_sub(self.acknowledged) < window {
            return Ok(());
        }
        self.acknowledged = self.received;
        let mut ack = Vec::with_capacity(16);
        single_chunk(
            &Message {
                csid: 2,
                type_id: ACKNOWLEDGEMENT,
                stream_id: 0,
                timestamp: 0,
                payload: self.received.to_be_bytes().to_vec(),
            },
            &mut ack,
        );
        self.socket.write_all(&ack).await?;
        Ok(())
    }

    async fn handshake(&mut self) -> Result<Vec<u8>, ConnectionError> {
        let mut handshake = Handshake::new(PeerType::Server);
        loop {
            let n = self.socket.read(&mut self.buf).await?;
            if n == 0 {
                return Err(ConnectionError::Refused("handshake_incomplete"));
            }
            self.shared.metrics.received_bytes.inc_by(n as u64);
            match handshake.process_bytes(&self.buf[..n])? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.socket.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.socket.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    }

    /// Sends responses and reacts to events, including the results that accepting or rejecting
    /// a request produces in turn.
    async fn handle(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), ConnectionError> {
        let mut queue = std::collections::VecDeque::from(results);
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.socket.write_all(&packet.bytes).await?
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let more = self.on_event(session, event).await?;
                    queue.extend(more);
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::debug!(type_id = payload.type_id, "unhandled rtmp message ignored");
                }
            }
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        if !matches!(
            event,
            ServerSessionEvent::VideoDataReceived { .. }
                | ServerSessionEvent::AudioDataReceived { .. }
        ) {
            tracing::debug!(event = event_name(&event), "rtmp event");
        }
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') == APP {
                    Ok(session.accept_request(request_id)?)
                } else {
                    tracing::warn!(app = %sanitize(&app_name), "unknown application");
                    let refusal = session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    )?;
                    self.flush(refusal).await?;
                    Err(ConnectionError::Refused("unknown_app"))
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => self.on_publish(session, request_id, &stream_key).await,
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                // Viewers watch over HLS; RTMP playback is not offered.
                let refusal = session.reject_request(
                    request_id,
                    "NetStream.Play.Failed",
                    "playback is over hls",
                )?;
                self.flush(refusal).await?;
                Err(ConnectionError::Refused("play"))
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(publish) = self.publish.take() {
                    tracing::info!(stream = %publish.stream, "publish finished");
                }
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn on_publish(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        stream_key: &str,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        // The key travels as a query on the stream name; it never becomes part of a path.
        let (name, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
        if self.publish.is_some() {
            return self
                .refuse(
                    session,
                    request_id,
                    name,
                    "second_publish",
                    "one publish per connection",
                )
                .await;
        }
        if split_rendition(name).is_none() {
            return self
                .refuse(session, request_id, name, "bad_name", "invalid stream name")
                .await;
        }
        // The ladder's own publishes carry its secret; the stream they transcode was admitted.
        let ladder = name.contains(livecast_media::publish::RENDITION_SEPARATOR)
            && self.shared.is_ladder_publish(query);
        let admitted = if ladder {
            Ok(())
        } else {
            self.shared.auth.check(name, query, self.peer).await
        };
        if let Err(denied) = admitted {
            self.audit(name, denied.reason());
            let refusal = session.reject_request(
                request_id,
                "NetStream.Publish.Unauthorized",
                "publish not authorized",
            )?;
            self.flush(refusal).await?;
            return Err(ConnectionError::Refused(denied.reason()));
        }
        let claimed = self
            .shared
            .live
            .lock()
            .map(|mut live| live.insert(name.to_string()))
            .unwrap_or(false);
        if !claimed {
            return self
                .refuse(
                    session,
                    request_id,
                    name,
                    "already_live",
                    "stream is already being published",
                )
                .await;
        }
        self.audit(name, ACCEPTED);
        let results = session.accept_request(request_id)?;
        tracing::Span::current().record("stream", name);
        let mut pipeline = Pipeline::new(name.to_string(), self.shared.clone(), self.peer);
        pipeline.open().await;
        tracing::info!("publish started");
        self.activity = Instant::now();
        self.publish = Some(Publish {
            stream: name.to_string(),
            pipeline: Some(pipeline),
            ladder: crate::ladder::LadderFeed::start(&self.shared, name),
        });
        Ok(results)
    }

    /// The audit trail: one line and one count per publish request, whatever its outcome.
    /// The stream name is logged without its query, so no secret reaches the log.
    fn audit(&self, name: &str, result: &'static str) {
        self.shared
            .metrics
            .publish_attempts
            .with_label_values(&[result])
            .inc();
        let name = sanitize(name);
        let client = self.peer.ip();
        let port = self.peer.port();
        if result == ACCEPTED {
            tracing::info!(target: AUDIT, stream = %name, %client, port, result, "publish attempt");
        } else {
            tracing::warn!(target: AUDIT, stream = %name, %client, port, result, "publish attempt");
        }
    }

    async fn refuse(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        name: &str,
        reason: &'static str,
        description: &str,
    ) -> Result<Vec<ServerSessionResult>, ConnectionError> {
        self.audit(name, reason);
        let refusal =
            session.reject_request(request_id, "NetStream.Publish.BadName", description)?;
        self.flush(refusal).await?;
        Err(ConnectionError::Refused(reason))
    }

    async fn flush(&mut self, results: Vec<ServerSessionResult>) -> Result<(), ConnectionError> {
        for result in results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                self.socket.write_all(&packet.bytes).await?;
            }
        }
        self.socket.flush().await?;
        Ok(())
    }

    fn forward(&mut self, message: MediaMessage) {
        let Some(publish) = self.publish.as_mut() else {
            return;
        };
        if let Some(pipeline) = publish.pipeline.as_mut() {
            self.activity = Instant::now();
            if let Some(ladder) = publish.ladder.as_mut() {
                ladder.push(&message);
            }
            pipeline.push(message);
        }
    }
}

/// The kind of a session event, for debug logs (events can carry secrets and media).
fn event_name(event: &ServerSessionEvent) -> &'static str {
    match event {
        ServerSessionEvent::ConnectionRequested { .. } => "connect",
        ServerSessionEvent::PublishStreamRequested { .. } => "publish",
        ServerSessionEvent::PublishStreamFinished { .. } => "publish_finished",
        ServerSessionEvent::PlayStreamRequested { .. } => "play",
        ServerSessionEvent::StreamMetadataChanged { .. } => "metadata",
        _ => "other",
    }
}

/// A peer-supplied string fit for a log line: bounded and without control characters.
fn sanitize(s: &str) -> String {
    s.chars().take(64).filter(|c| !c.is_control()).collect()
}
