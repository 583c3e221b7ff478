//! Every metric the ingest service exports, registered in the service's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Ingest metrics.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub streams_active: IntGauge,
    pub connections: IntCounter,
    pub received_bytes: IntCounter,
    pub segments_written: IntCounter,
    pub parts_written: IntCounter,
    pub media_errors: IntCounter,
    pub rejected: IntCounterVec,
    pub publish_attempts: IntCounterVec,
    pub write_errors: IntCounterVec,
    pub volume_full: IntGauge,
    pub gap_segments: IntCounter,
    pub ladder_processes: IntGauge,
    pub ladder_restarts: IntCounter,
    pub ladder_failures: IntCounterVec,
    pub ladder_dropped: IntCounter,
    pub ladder_cpu: prometheus::Counter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            streams_active: IntGauge::new(
                "livecast_ingest_streams_active",
                "Streams being published now",
            )?,
            connections: IntCounter::new(
                "livecast_ingest_connections_total",
                "RTMP connections accepted",
            )?,
            received_bytes: IntCounter::new(
                "livecast_ingest_received_bytes_total",
                "Bytes received from RTMP peers",
            )?,
            segments_written: IntCounter::new(
                "livecast_ingest_segments_written_total",
                "HLS segments written to the volume",
            )?,
            parts_written: IntCounter::new(
                "livecast_ingest_parts_written_total",
                "LL-HLS parts written to the volume",
            )?,
            write_errors: IntCounterVec::new(
                Opts::new(
                    "livecast_ingest_write_errors_total",
                    "Failed writes of stream files, by kind (no_space, other)",
                ),
                &["kind"],
            )?,
            volume_full: IntGauge::new(
                "livecast_ingest_volume_full",
                "1 while the last write of a stream file failed for lack of space",
            )?,
            gap_segments: IntCounter::new(
                "livecast_ingest_gap_segments_total",
                "Segments listed as EXT-X-GAP because their media could not be written whole",
            )?,
            media_errors: IntCounter::new(
                "livecast_ingest_media_errors_total",
                "Audio or video messages that could not be packaged and were dropped",
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "livecast_ingest_rejected_total",
                    "Connections or publishes refused, by reason",
                ),
                &["reason"],
            )?,
            publish_attempts: IntCounterVec::new(
                Opts::new(
                    "livecast_ingest_publish_attempts_total",
                    "Publish requests, by result (accepted, or the reason of the refusal)",
                ),
                &["result"],
            )?,
            ladder_processes: IntGauge::new(
                "livecast_ingest_ladder_processes",
                "Server-side ladder transcoders (ffmpeg children) running",
            )?,
            ladder_restarts: IntCounter::new(
                "livecast_ingest_ladder_restarts_total",
                "Ladder transcoders started again after one stopped",
            )?,
            ladder_failures: IntCounterVec::new(
                Opts::new(
                    "livecast_ingest_ladder_failures_total",
                    "Ladder transcoders that could not start (spawn) or stopped during their publish (exit)",
                ),
                &["reason"],
            )?,
            ladder_dropped: IntCounter::new(
                "livecast_ingest_ladder_dropped_messages_total",
                "Media messages not copied to a ladder transcoder that was behind (dropped to the next keyframe)",
            )?,
            ladder_cpu: prometheus::Counter::new(
                "livecast_ingest_ladder_cpu_seconds_total",
                "CPU time (user and system) used by ladder transcoders",
            )?,
        };
        registry.register(Box::new(m.ladder_processes.clone()))?;
        registry.register(Box::new(m.ladder_restarts.clone()))?;
        registry.register(Box::new(m.ladder_failures.clone()))?;
        registry.register(Box::new(m.ladder_dropped.clone()))?;
        registry.register(Box::new(m.ladder_cpu.clone()))?;
        registry.register(Box::new(m.publish_attempts.clone()))?;
        registry.register(Box::new(m.streams_active.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.received_bytes.clone()))?;
        registry.register(Box::new(m.segments_written.clone()))?;
        registry.register(Box::new(m.parts_written.clone()))?;
        registry.register(Box::new(m.media_errors.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.write_errors.clone()))?;
        registry.register(Box::new(m.volume_full.clone()))?;
        registry.register(Box::new(m.gap_segments.clone()))?;
        Ok(m)
    }
}
