//! Pure media code for livecast: FLV tag bodies in, MPEG-TS or fMP4 segments and parts and
//! HLS playlists out.
//!
//! Nothing in this crate opens a socket, spawns a task, reads a clock or touches the file
//! system. Callers hand in bytes and timestamps (and wall-clock times as plain values) and get
//! bytes and models back, which keeps every piece deterministic, unit-testable and fuzzable.
//!
//! # Layout
//!
//! - [`flv`]: video and audio tag bodies as RTMP carries them (H.264, AAC, and Enhanced RTMP
//!   with HEVC and AV1).
//! - [`avc`]: AVCDecoderConfigurationRecord and the AVCC → Annex B rewrite.
//! - [`av1`]: AV1CodecConfigurationRecord and picture size.
//! - [`hevc`]: HEVCDecoderConfigurationRecord, Annex B rewrite and picture size.
//! - [`aac`]: AudioSpecificConfig and ADTS framing.
//! - [`ts`]: the MPEG-TS muxer (PAT/PMT, PES, PCR, continuity counters).
//! - [`fmp4`]: fragmented MP4 (CMAF) init segments and `moof`/`mdat` fragments.
//! - [`segmenter`]: turns a stream of tags into LL-HLS parts and segments cut at keyframes,
//!   as MPEG-TS or fMP4.
//! - [`playlist`]: the HLS media playlist model and writer.
//! - [`master`]: the master (multivariant) playlist: variants, their bandwidth and codecs.
//! - [`publish`]: the publish facts (codecs, picture size, frame rate, keyframe interval) the
//!   ingest leaves beside a playlist for operators.
//! - [`timestamp`]: extends 32-bit RTMP millisecond timestamps into a monotonic timeline.

pub mod aac;
pub mod av1;
pub mod avc;
mod bits;
pub mod codecs;
mod error;
pub mod flv;
pub mod fmp4;
pub mod hevc;
pub mod master;
pub mod playlist;
pub mod publish;
pub mod segmenter;
pub mod timestamp;
pub mod ts;

pub use error::MediaError;
