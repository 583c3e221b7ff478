//! The RTMP chunk layer (RTMP specification 1.0, §5.3), read per spec: every chunk stream keeps
//! its own header state and its own partial message, so messages interleaved chunk by chunk on
//! different chunk streams are reassembled intact. Set Chunk Size and Abort are applied here;
//! aggregate messages (type 22) are split into their sub-messages.
//!
//! Pure: bytes in, whole messages out. Limits bound what a peer can make us hold: a chunk size
//! of at most [`MAX_CHUNK_SIZE`], messages of at most [`MAX_MESSAGE`] bytes, at most
//! [`MAX_CHUNK_STREAMS`] chunk streams, and memory for partial messages that grows with the
//! bytes actually received, beyond a bounded reservation for the announced length.

use std::collections::{HashMap, VecDeque};

/// The chunk size both sides start with.
pub const INITIAL_CHUNK_SIZE: usize = 128;
/// Largest chunk size a peer may set (message lengths are 24-bit anyway).
pub const MAX_CHUNK_SIZE: usize = 0xff_ffff;
/// Largest message accepted; a keyframe of a 4K stream is well below.
pub const MAX_MESSAGE: usize = 8 << 20;
/// Most chunk streams one connection may use.
pub const MAX_CHUNK_STREAMS: usize = 64;

/// Most bytes reserved for a message before its chunks arrive.
const PREALLOCATE: usize = 256 << 10;

/// Message type ids.
pub const SET_CHUNK_SIZE: u8 = 1;
/// Abort Message.
pub const ABORT: u8 = 2;
/// Audio data.
pub const AUDIO: u8 = 8;
/// Video data.
pub const VIDEO: u8 = 9;
/// Aggregate message.
pub const AGGREGATE: u8 = 22;

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp in milliseconds (wrapping 32-bit).
    pub timestamp: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why the input cannot be read any further; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk continues a chunk stream that never had a full header.
    #[error("chunk stream {0} continued before any header")]
    NoHeader(u32),
    /// A message longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the limit")]
    MessageTooLong(usize),
    /// More chunk streams than [`MAX_CHUNK_STREAMS`].
    #[error("too many chunk streams")]
    TooManyChunkStreams,
    /// Set Chunk Size with 0, the high bit set or beyond [`MAX_CHUNK_SIZE`].
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// A protocol control message or aggregate that does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

#[derive(Debug, Default)]
struct ChunkStream {
    /// Whether a type 0 header was seen (types 1–3 need one before them).
    started: bool,
    timestamp: u32,
    /// The timestamp field of the latest header: a delta for types 1 and 2 (and, as FFmpeg and
    /// librtmp read it, the value a type 3 header repeats).
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// Whether the latest header carried an extended timestamp (type 3 chunks then do too).
    extended: bool,
    /// The message being reassembled, if one is under way.
    partial: Option<Vec<u8>>,
}

/// Reassembles messages from the bytes of one connection; see the module documentation.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    buf: Vec<u8>,
    pos: usize,
    streams: HashMap<u32, ChunkStream>,
    ready: VecDeque<Message>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    /// A reader at the initial chunk size.
    pub fn new() -> Self {
        Self {
            chunk_size: INITIAL_CHUNK_SIZE,
            buf: Vec::new(),
            pos: 0,
            streams: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until more bytes are needed. Set Chunk Size and Abort
    /// take effect here and are not returned; aggregates come out as their sub-messages.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Ok(Some(message));
            }
            let Some(message) = self.read_chunk()? else {
                return Ok(None);
            };
            match message.type_id {
                SET_CHUNK_SIZE => {
                    let size =
                        be_u32(&message.payload).ok_or(ChunkError::Malformed("set chunk size"))?;
                    if size == 0 || size & 0x8000_0000 != 0 || size as usize > MAX_CHUNK_SIZE {
                        return Err(ChunkError::BadChunkSize(size));
                    }
                    self.chunk_size = size as usize;
                }
                ABORT => {
                    let csid = be_u32(&message.payload).ok_or(ChunkError::Malformed("abort"))?;
                    if let Some(stream) = self.streams.get_mut(&csid) {
                        stream.partial = None;
                    }
                }
                AGGREGATE => split_aggregate(&message, &mut self.ready)?,
                _ => return Ok(Some(message)),
            }
        }
    }

    /// Reads one chunk if the buffer holds all of it; returns a message when the chunk
    /// completed one.
    fn read_chunk(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let data = &self.buf[self.pos..];
            let Some((header, used)) = parse_header(data) else {
                return Ok(None);
            };
            if !self.streams.contains_key(&header.csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(ChunkError::TooManyChunkStreams);
            }
            let stream = self.streams.entry(header.csid).or_default();
            // Extended timestamp: after a 0xFFFFFF field, or on a type 3 chunk of a stream whose
            // latest header had one.
            let extended = match header.fmt {
                3 => stream.extended,
                _ => header.field == 0xff_ffff,
            };
            let ext_len = if extended { 4 } else { 0 };
            if data.len() < used + ext_len {
                return Ok(None);
            }
            let field = if extended {
                be_u32(&data[used..used + 4]).unwrap_or_default()
            } else {
                header.field
            };
            // Work out the message this chunk belongs to without changing state yet: the chunk
            // may still be incomplete.
            let new_message = header.fmt != 3 || stream.partial.is_none();
            if header.fmt != 0 && !stream.started {
                return Err(ChunkError::NoHeader(header.csid));
            }
            let length = if header.fmt <= 1 {
                header.length
            } else {
                stream.length
            };
            if length > MAX_MESSAGE {
                return Err(ChunkError::MessageTooLong(length));
            }
            let have = if new_message {
                0
            } else {
                stream.partial.as_ref().map_or(0, Vec::len)
            };
            let take = (length - have).min(self.chunk_size);
            let start = used + ext_len;
            if data.len() < start + take {
                return Ok(None);
            }
            // The whole chunk is here: apply it.
            match header.fmt {
                0 => {
                    stream.started = true;
                    stream.timestamp = field;
                    stream.delta = field;
                    stream.length = header.length;
                    stream.type_id = header.type_id;
                    stream.stream_id = header.stream_id;
                }
                1 => {
                    stream.delta = field;
                    stream.length = header.length;
                    stream.type_id = header.type_id;
                    stream.timestamp = stream.timestamp.wrapping_add(field);
                }
                2 => {
                    stream.delta = field;
                    stream.timestamp = stream.timestamp.wrapping_add(field);
                }
                _ => {
                    if new_message {
                        stream.timestamp = stream.timestamp.wrapping_add(stream.delta);
                    }
                }
            }
            if header.fmt != 3 {
                stream.extended = extended;
            }
            let payload = &data[start..start + take];
            let partial = if new_message {
                // Room for the whole message up to a bound: a header alone cannot make us
                // reserve much, and most frames never need to grow.
                stream
                    .partial
                    .insert(Vec::with_capacity(length.min(PREALLOCATE)))
            } else {
                stream.partial.get_or_insert_with(Vec::new)
            };
            partial.extend_from_slice(payload);
            self.pos += start + take;
            if partial.len() >= length {
                let payload = stream.partial.take().unwrap_or_default();
                return Ok(Some(Message {
                    csid: header.csid,
                    type_id: stream.type_id,
                    stream_id: stream.stream_id,
                    timestamp: stream.timestamp,
                    payload,
                }));
            }
        }
    }
}

struct Header {
    fmt: u8,
    csid: u32,
    field: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
}

/// Parses a basic header and message header; `None` if `data` is too short.
fn parse_header(data: &[u8]) -> Option<(Header, usize)> {
    let first = *data.first()?;
    let fmt = first >> 6;
    let (csid, mut pos) = match first & 0x3f {
        0 => (64 + u32::from(*data.get(1)?), 2),
        1 => (
            64 + u32::from(*data.get(1)?) + 256 * u32::from(*data.get(2)?),
            3,
        ),
        id => (u32::from(id), 1),
    };
    let size = [11, 7, 3, 0][usize::from(fmt)];
    let h = data.get(pos..pos + size)?;
    pos += size;
    let u24 = |b: &[u8]| (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    let mut header = Header {
        fmt,
        csid,
        field: 0,
        length: 0,
        type_id: 0,
        stream_id: 0,
    };
    if fmt <= 2 {
        header.field = u24(&h[0..3]);
    }
    if fmt <= 1 {
        header.length = u24(&h[3..6]) as usize;
        header.type_id = h[6];
    }
    if fmt == 0 {
        header.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
    }
    Some((header, pos))
}

/// Splits an aggregate message: FLV tags back to back (type, 24-bit size, 24+8-bit timestamp,
/// 24-bit stream id, body, 32-bit back pointer). Sub-message timestamps keep their offsets
/// from the first tag, placed on the aggregate's own timestamp.
fn split_aggregate(message: &Message, out: &mut VecDeque<Message>) -> Result<(), ChunkError> {
    let data = &message.payload;
    let mut pos = 0;
    let mut base = None;
    while pos < data.len() {
        let head = data
            .get(pos..pos + 11)
            .ok_or(ChunkError::Malformed("aggregate tag header"))?;
        let type_id = head[0] & 0x1f;
        let size =
            (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
        let ts = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body = data
            .get(pos + 11..pos + 11 + size)
            .ok_or(ChunkError::Malformed("aggregate tag body"))?;
        let first = *base.get_or_insert(ts);
        out.push_back(Message {
            csid: message.csid,
            type_id,
            stream_id: message.stream_id,
            timestamp: message.timestamp.wrapping_add(ts.wrapping_sub(first)),
            payload: body.to_vec(),
        });
        // Skip the back pointer; tolerate its absence after the last tag.
        pos += 11 + size + 4;
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Writes `message` as a single type 0 chunk (the whole payload in one chunk, for a reader
/// whose chunk size is at least the message length).
pub fn single_chunk(message: &Message, out: &mut Vec<u8>) {
    let csid = message.csid.clamp(2, 63) as u8;
    out.push(csid);
    let extended = message.timestamp >= 0xff_ffff;
    let field = if extended {
        0xff_ffff
    } else {
        message.timestamp
    };
    out.extend_from_slice(&field.to_be_bytes()[1..]);
    out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes()[1..]);
    out.push(message.type_id);
    out.extend_from_slice(&message.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&message.timestamp.to_be_bytes());
    }
    out.extend_from_slice(&message.payload);
}

#[cfg(test)]
mod tests {
    use super::chunking::chunked;
    use super::*;

    fn read_all(reader: &mut ChunkReader, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            reader.push(piece);
            while let Some(m) = reader.next_message().unwrap() {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn interleaved_chunk_streams_reassemble() {
        let video: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let audio: Vec<u8> = (0..300u32).map(|i| (i * 3) as u8).collect();
        let v = chunked(6, VIDEO, 40, &video, 128);
        let a = chunked(4, AUDIO, 23, &audio, 128);
        let mut bytes = Vec::new();
        for i in 0..v.len().max(a.len()) {
            for side in [&v, &a] {
                if let Some(c) = side.get(i) {
                    bytes.extend_from_slice(c);
                }
            }
        }
        for step in [1, 7, 128, 4096] {
            let got = read_all(&mut ChunkReader::new(), &bytes, step);
            assert_eq!(got.len(), 2, "step {step}");
            let audio_msg = got.iter().find(|m| m.type_id == AUDIO).unwrap();
            let video_msg = got.iter().find(|m| m.type_id == VIDEO).unwrap();
            assert_eq!(audio_msg.payload, audio);
            assert_eq!((audio_msg.timestamp, audio_msg.csid), (23, 4));
            assert_eq!(video_msg.payload, video);
            assert_eq!(video_msg.timestamp, 40);
        }
    }

    #[test]
    fn headers_types_1_to_3_and_extended_timestamps() {
        let mut bytes = Vec::new();
        // Type 0 with an extended timestamp, then types 2, 1 and 3 adding their deltas.
        let big = 0x0100_0004;
        bytes.extend(chunked(5, AUDIO, big, &[1, 2, 3], 128).concat());
        bytes.extend_from_slice(&[0x80 | 5, 0, 0, 10, 9, 9, 9]); // type 2: delta 10, same length
        bytes.extend_from_slice(&[0x40 | 5, 0, 0, 20, 0, 0, 2, VIDEO, 7, 7]); // type 1
        bytes.extend_from_slice(&[0xc0 | 5, 8, 8]); // type 3: a new message, delta 20 again
        let got = read_all(&mut ChunkReader::new(), &bytes, 3);
        let summary: Vec<(u8, u32, Vec<u8>)> = got
            .into_iter()
            .map(|m| (m.type_id, m.timestamp, m.payload))
            .collect();
        assert_eq!(
            summary,
            vec![
                (AUDIO, big, vec![1, 2, 3]),
                (AUDIO, big + 10, vec![9, 9, 9]),
                (VIDEO, big + 30, vec![7, 7]),
                (VIDEO, big + 50, vec![8, 8]),
            ]
        );
    }

    #[test]
    fn set_chunk_size_abort_and_aggregates() {
        let mut bytes = Vec::new();
        // Set Chunk Size 4096 on csid 2.
        bytes.extend(chunked(2, SET_CHUNK_SIZE, 0, &4096u32.to_be_bytes(), 128).concat());
        // A 1000-byte message now fits one chunk.
        bytes.extend(chunked(6, VIDEO, 0, &[5; 1000], 4096).concat());
        // Start a message on csid 7, abort it, then send a whole one there.
        let first = chunked(7, AUDIO, 0, &[1; 5000], 4096).remove(0);
        bytes.extend_from_slice(&first);
        bytes.extend(chunked(2, ABORT, 0, &7u32.to_be_bytes(), 4096).concat());
        bytes.extend(chunked(7, AUDIO, 0, &[2; 10], 4096).concat());
        // An aggregate of two tags at 1000 and 1040, sent with timestamp 500.
        let mut agg = Vec::new();
        for (kind, ts, body) in [(AUDIO, 1000u32, vec![3u8; 4]), (VIDEO, 1040, vec![4u8; 6])] {
            agg.push(kind);
            agg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            agg.extend_from_slice(&ts.to_be_bytes()[1..]);
            agg.push(0);
            agg.extend_from_slice(&[0, 0, 0]);
            agg.extend_from_slice(&body);
            agg.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        bytes.extend(chunked(8, AGGREGATE, 500, &agg, 4096).concat());
        let mut reader = ChunkReader::new();
        let got = read_all(&mut reader, &bytes, 1000);
        assert_eq!(reader.chunk_size(), 4096);
        let summary: Vec<(u8, u32, usize)> = got
            .iter()
            .map(|m| (m.type_id, m.timestamp, m.payload.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (VIDEO, 0, 1000),
                (AUDIO, 0, 10),
                (AUDIO, 500, 4),
                (VIDEO, 540, 6)
            ]
        );
    }

    #[test]
    fn limits_end_the_connection() {
        let mut reader = ChunkReader::new();
        // A header announcing 16 MB.
        reader.push(&[6, 0, 0, 0, 0xff, 0xff, 0xff, VIDEO, 1, 0, 0, 0]);
        assert_eq!(
            reader.next_message(),
            Err(ChunkError::MessageTooLong(0xff_ffff))
        );
        let mut reader = ChunkReader::new();
        reader.push(&[0xc0 | 9, 1, 2, 3]);
        assert_eq!(reader.next_message(), Err(ChunkError::NoHeader(9)));
        let mut reader = ChunkReader::new();
        reader.push(&chunked(2, SET_CHUNK_SIZE, 0, &0u32.to_be_bytes(), 128).concat());
        assert_eq!(reader.next_message(), Err(ChunkError::BadChunkSize(0)));
        // One-byte messages on ever new chunk streams (two-byte basic headers).
        let mut reader = ChunkReader::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u8 {
            reader.push(&[0, 36 + csid, 0, 0, 0, 0, 0, 1, AUDIO, 1, 0, 0, 0, 0xaa]);
        }
        for _ in 0..MAX_CHUNK_STREAMS {
            assert!(reader.next_message().unwrap().is_some());
        }
        assert_eq!(reader.next_message(), Err(ChunkError::TooManyChunkStreams));
    }
}
#[cfg(test)]
/// Splits messages into chunks the way a publisher does, for the tests.
mod chunking {
    use super::*;
    /// Chunks `payload` at `size` on `csid`: type 0 then type 3 chunks.
    pub fn chunked(csid: u8, type_id: u8, ts: u32, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(size)
            .enumerate()
            .map(|(i, piece)| {
                let mut c = Vec::new();
                if i == 0 {
                    single_chunk(
                        &Message {
                            csid: u32::from(csid),
                            type_id,
                            stream_id: 1,
                            timestamp: ts,
                            payload: Vec::new(),
                        },
                        &mut c,
                    );
                    // Patch the length to the whole payload's.
                    c[4..7].copy_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                } else {
                    c.push(0xc0 | csid);
                    if ts >= 0xff_ffff {
                        c.extend_from_slice(&ts.to_be_bytes());
                    }
                }
                c.extend_from_slice(piece);
                c
            })
            .collect()
    }

    #[test]
    fn many_interleaved_pairs_in_any_read_sizes() {
        let mut bytes = Vec::new();
        let mut expect = Vec::new();
        for i in 0..50u32 {
            let vlen = 100 + (i as usize * 977) % 6000;
            let alen = 50 + (i as usize * 131) % 400;
            let v: Vec<u8> = (0..vlen).map(|k| (k + i as usize) as u8).collect();
            let a: Vec<u8> = (0..alen).map(|k| (k * 7 + i as usize) as u8).collect();
            let vc = chunked(6, VIDEO, i * 33, &v, 128);
            let ac = chunked(4, AUDIO, i * 23, &a, 128);
            for k in 0..vc.len().max(ac.len()) {
                if let Some(c) = vc.get(k) {
                    bytes.extend_from_slice(c);
                }
                if let Some(c) = ac.get(k) {
                    bytes.extend_from_slice(c);
                }
            }
            expect.push(v.len());
            expect.push(a.len());
        }
        for step in [1usize, 5, 100, 1000, 7000] {
            let mut r = ChunkReader::new();
            let mut n = 0;
            for piece in bytes.chunks(step) {
                r.push(piece);
                while let Some(_m) = r.next_message().unwrap() {
                    n += 1;
                }
            }
            assert_eq!(n, 100, "step {step}");
        }
    }
}
