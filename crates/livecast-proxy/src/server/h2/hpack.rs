//! HPACK (RFC 7541) for the balancer's HTTP/2: a complete decoder for what viewers send
//! (static and dynamic table, Huffman strings, table size updates), and an encoder for the
//! answers that indexes nothing. An answer's fields are written as literals "without indexing"
//! (or "never indexed" for sensitive values), their names by static index where the table has
//! them, their values as they are: no dynamic table to keep in step with the viewer's, no
//! Huffman coding to pay for on every answer.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};

/// Why a header block could not be decoded: a connection error (COMPRESSION_ERROR), since the
/// dynamic table can no longer be trusted to match the viewer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in the dynamic table besides its octets (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoder's state for one connection: the dynamic table the viewer's encoder fills.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest first, as the table's indexes count.
    entries: VecDeque<(Bytes, Bytes)>,
    size: usize,
    /// The size the viewer's encoder last chose (at most `limit`).
    max_size: usize,
    /// The size this end allows (SETTINGS_HEADER_TABLE_SIZE, which the balancer leaves at its
    /// default).
    limit: usize,
    /// Reused for Huffman-coded strings.
    scratch: Vec<u8>,
    scratch_name: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            scratch: Vec::new(),
            scratch_name: Vec::new(),
        }
    }

    /// Decodes one complete header block, calling `field` with each name and value in order.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut pos = 0;
        let mut fields_seen = false;
        while pos < block.len() {
            let first = block[pos];
            if first & 0x80 != 0 {
                // Indexed field.
                let index = integer(block, &mut pos, 7)?;
                let (name, value) = self.lookup(index)?;
                field(name, value);
                fields_seen = true;
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                let index = integer(block, &mut pos, 6)?;
                let name: Bytes = if index == 0 {
                    Bytes::copy_from_slice(string(block, &mut pos, &mut self.scratch_name)?)
                } else {
                    Bytes::copy_from_slice(self.lookup(index)?.0)
                };
                let value = Bytes::copy_from_slice(string(block, &mut pos, &mut self.scratch)?);
                field(&name, &value);
                self.insert(name, value);
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the block's first field.
                if fields_seen {
                    return Err(DecodeError("table size update after a field"));
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.limit {
                    return Err(DecodeError("table size update above the limit"));
                }
                self.max_size = size;
                self.evict();
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let index = integer(block, &mut pos, 4)?;
                if index == 0 {
                    let name = string(block, &mut pos, &mut self.scratch_name)?;
                    let value = string(block, &mut pos, &mut self.scratch)?;
                    field(name, value);
                } else {
                    let value = string(block, &mut pos, &mut self.scratch)?;
                    let name = lookup(&self.entries, index)?.0;
                    field(name, value);
                }
                fields_seen = true;
            }
        }
        Ok(())
    }

    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        lookup(&self.entries, index)
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it and is not kept (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.entries.push_front((name, value));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => self.size = 0,
            }
        }
    }
}

fn lookup(entries: &VecDeque<(Bytes, Bytes)>, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    match index {
        0 => Err(DecodeError("index 0")),
        1..=61 => {
            let (n, v) = STATIC[index - 1];
            Ok((n.as_bytes(), v.as_bytes()))
        }
        _ => entries
            .get(index - 62)
            .map(|(n, v)| (&n[..], &v[..]))
            .ok_or(DecodeError("index past the dynamic table")),
    }
}

/// An integer with an `prefix`-bit prefix (RFC 7541 §5.1), starting at `block[*pos]`.
fn integer(block: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1u8 << prefix) - 1;
    let mut value = usize::from(block[*pos] & mask);
    *pos += 1;
    if value < usize::from(mask) {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let Some(&byte) = block.get(*pos) else {
            return Err(DecodeError("integer cut short"));
        };
        *pos += 1;
        // Nothing a header block holds needs more than 2^28.
        if shift > 21 {
            return Err(DecodeError("integer too large"));
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A string literal (RFC 7541 §5.2): the octets in the block, or their Huffman decoding in
/// `scratch`.
fn string<'a>(
    block: &'a [u8],
    pos: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], DecodeError> {
    let Some(&first) = block.get(*pos) else {
        return Err(DecodeError("string missing"));
    };
    let huffman = first & 0x80 != 0;
    let len = integer(block, pos, 7)?;
    let Some(raw) = block.get(*pos..*pos + len) else {
        return Err(DecodeError("string cut short"));
    };
    *pos += len;
    if !huffman {
        return Ok(raw);
    }
    scratch.clear();
    huffman::decode(raw, scratch)?;
    Ok(scratch)
}

/// Encodes an answer's head: `:status` and each field of `headers` but those HTTP/2 forbids.
pub(crate) fn encode_response(status: StatusCode, headers: &HeaderMap, dst: &mut BytesMut) {
    match status.as_u16() {
        200 => dst.put_u8(0x88),
        204 => dst.put_u8(0x89),
        206 => dst.put_u8(0x8a),
        304 => dst.put_u8(0x8b),
        400 => dst.put_u8(0x8c),
        404 => dst.put_u8(0x8d),
        500 => dst.put_u8(0x8e),
        _ => {
            // Literal without indexing, name `:status` (static index 8).
            dst.put_u8(0x08);
            put_string(status.as_str().as_bytes(), dst);
        }
    }
    for (name, value) in headers {
        if is_connection_specific(name) {
            continue;
        }
        put_field(name.as_str(), value, dst);
    }
}

/// A field HTTP/2 does not carry (RFC 9113 §8.2.2).
pub(crate) fn is_connection_specific(name: &http::HeaderName) -> bool {
    use http::header;
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn put_field(name: &str, value: &HeaderValue, dst: &mut BytesMut) {
    // "Never indexed" keeps a sensitive value out of any table on the way, as HPACK asks of
    // intermediaries (RFC 7541 §6.2.3).
    let flags = if value.is_sensitive() { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(index) => put_integer(index, 4, flags, dst),
        None => {
            dst.put_u8(flags);
            put_string(name.as_bytes(), dst);
        }
    }
    put_string(value.as_bytes(), dst);
}

/// The static table's index for a name an answer may carry.
fn static_name(name: &str) -> Option<usize> {
    Some(match name {
        "accept-ranges" => 18,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "date" => 33,
        "etag" => 34,
        "expires" => 36,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "proxy-authenticate" => 48,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

fn put_integer(value: usize, prefix: u8, flags: u8, dst: &mut BytesMut) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        // `value` fits in the prefix, which leaves the flags' bits alone.
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// A string literal as it is (no Huffman coding).
fn put_string(s: &[u8], dst: &mut BytesMut) {
    put_integer(s.len(), 7, 0, dst);
    dst.put_slice(s);
}

/// The Huffman code of RFC 7541 Appendix B. It is canonical: the codes of each length follow
/// one another in symbol order, each length's first code following the last of the length
/// before. So the 257 code lengths are the whole table, and the decoder works from the first
/// code and the symbols of each length, computed from them at compile time.
pub(crate) mod huffman {
    use super::DecodeError;

    /// Code length in bits of each symbol, 0 to 255 and EOS (256), from Appendix B.
    #[rustfmt::skip]
    const LENGTHS: [u8; 257] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ];

    const SHORTEST: usize = 5;
    const LONGEST: usize = 30;
    const EOS: u16 = 256;

    /// The canonical code's tables: per length, its first code, how many codes it has and where
    /// its symbols start in `symbols` (sorted by length, then value).
    struct Canonical {
        first: [u32; LONGEST + 1],
        count: [u32; LONGEST + 1],
        start: [u16; LONGEST + 1],
        symbols: [u16; 257],
        codes: [u32; 257],
    }

    const TABLE: Canonical = canonical();

    const fn canonical() -> Canonical {
        let mut t = Canonical {
            first: [0; LONGEST + 1],
            count: [0; LONGEST + 1],
            start: [0; LONGEST + 1],
            symbols: [0; 257],
            codes: [0; 257],
        };
        let mut s = 0;
        while s < 257 {
            t.count[LENGTHS[s] as usize] += 1;
            s += 1;
        }
        let (mut code, mut at, mut len) = (0u32, 0u16, 1);
        while len <= LONGEST {
            code <<= 1;
            t.first[len] = code;
            t.start[len] = at;
            let mut s = 0;
            while s < 257 {
                if LENGTHS[s] as usize == len {
                    t.symbols[at as usize] = s as u16;
                    t.codes[s] = code;
                    at += 1;
                    code += 1;
                }
                s += 1;
            }
            len += 1;
        }
        // A complete code: the last code of the longest length is all ones.
        assert!(code == 1 << LONGEST);
        t
    }

    /// Appends the decoding of `input` to `out`. The padding must be fewer than 8 bits, all
    /// ones (the start of EOS), and EOS itself must not appear (RFC 7541 §5.2).
    pub(crate) fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut bits: u64 = 0;
        let mut have = 0usize;
        let mut next = input.iter();
        loop {
            while have <= 56 - 8 {
                match next.next() {
                    Some(&byte) => {
                        bits = (bits << 8) | u64::from(byte);
                        have += 8;
                    }
                    None => break,
                }
            }
            if have < SHORTEST {
                break;
            }
            let mut len = SHORTEST;
            let symbol = loop {
                if len > have.min(LONGEST) {
                    break None;
                }
                let code = ((bits >> (have - len)) & ((1 << len) - 1)) as u32;
                let offset = code.wrapping_sub(TABLE.first[len]);
                if offset < TABLE.count[len] {
                    break Some(TABLE.symbols[TABLE.start[len] as usize + offset as usize]);
                }
                len += 1;
            };
            match symbol {
                Some(EOS) => return Err(DecodeError("EOS in a Huffman string")),
                Some(symbol) => {
                    out.push(symbol as u8);
                    have -= len;
                }
                // What is left is no whole code: padding, checked below.
                None => break,
            }
        }
        let padding = bits & ((1 << have) - 1);
        if have >= 8 || padding != (1 << have) - 1 {
            return Err(DecodeError("bad Huffman padding"));
        }
        Ok(())
    }

    /// The Huffman coding of `input`, padded with ones: for tests, which play the part of a
    /// viewer's encoder.
    #[cfg(test)]
    pub(crate) fn encode(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut bits, mut have) = (0u64, 0usize);
        for &byte in input {
            let len = LENGTHS[byte as usize] as usize;
            bits = (bits << len) | u64::from(TABLE.codes[byte as usize]);
            have += len;
            while have >= 8 {
                out.push((bits >> (have - 8)) as u8);
                have -= 8;
            }
        }
        if have > 0 {
            out.push(((bits << (8 - have)) as u8) | ((1u8 << (8 - have)) - 1));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String)>, DecodeError> {
        let mut fields = Vec::new();
        decoder.decode(block, |n, v| {
            fields.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(fields)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 Appendix C.4: three requests on one connection, Huffman-coded, the dynamic
    /// table carried from one to the next.
    #[test]
    fn the_rfc_examples_of_requests_with_huffman_coding() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.size, 57);
        assert_eq!(
            decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            decode_all(
                &mut d,
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")
            )
            .unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164);
        assert_eq!(d.entries.len(), 3);
    }

    /// RFC 7541 Appendix C.5.1 with a 256-octet table, then a size update to 0 that empties it.
    #[test]
    fn eviction_and_size_updates() {
        let mut d = Decoder::new(4096);
        d.max_size = 256;
        let block = hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
        );
        decode_all(&mut d, &block).unwrap();
        assert_eq!(d.size, 222);
        // C.5.2: a 307 pushes the oldest entry (:status 302) out.
        decode_all(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(d.size, 222);
        assert_eq!(&d.entries[0].1[..], b"307");
        assert_eq!(d.entries.len(), 4);
        decode_all(&mut d, &[0x20]).unwrap();
        assert_eq!((d.size, d.entries.len()), (0, 0));
        assert_eq!(
            decode_all(&mut d, &hex("be")),
            Err(DecodeError("index past the dynamic table"))
        );
        // Above the limit this end allows, and after a field, a size update is an error.
        assert!(decode_all(&mut d, &hex("3fe2 1f")).is_err());
        assert!(decode_all(&mut d, &hex("8220")).is_err());
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        for block in [
            &hex("80")[..],                  // index 0
            &hex("ff")[..],                  // integer cut short
            &hex("ffff ffff ffff ff7f")[..], // integer too large
            &hex("4085 f2b2")[..],           // string cut short
            &hex("0081 ff")[..],             // padding of 8 bits
            &hex("0084 ffff ffff")[..],      // EOS in the string
            &hex("0081 00")[..],             // padding not all ones
        ] {
            let mut d = Decoder::new(4096);
            assert!(decode_all(&mut d, block).is_err(), "{block:02x?}");
        }
    }

    #[test]
    fn huffman_round_trips_every_octet() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        huffman::decode(&huffman::encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
        for text in [
            "",
            "a",
            "www.example.com",
            "/hls/live/part123.m4s?_HLS_msn=9&_HLS_part=2",
        ] {
            let mut out = Vec::new();
            huffman::decode(&huffman::encode(text.as_bytes()), &mut out).unwrap();
            assert_eq!(out, text.as_bytes());
        }
        assert_eq!(
            huffman::encode(b"www.example.com"),
            hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")
        );
    }

    /// An answer's head decodes back to what it was, with the sensitive value never indexed
    /// and nothing left in the decoder's table.
    #[test]
    fn answers_encode_without_indexing() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/vnd.apple.mpegurl"),
        );
        headers.insert("content-length", HeaderValue::from_static("1234"));
        headers.insert("x-custom", HeaderValue::from_static("v"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        let mut id = HeaderValue::from_static("abc");
        id.set_sensitive(true);
        headers.insert("x-request-id", id);
        let mut block = BytesMut::new();
        encode_response(StatusCode::OK, &headers, &mut block);
        let mut teapot = BytesMut::new();
        encode_response(StatusCode::IM_A_TEAPOT, &HeaderMap::new(), &mut teapot);
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &block).unwrap(),
            pairs(&[
                (":status", "200"),
                ("content-type", "application/vnd.apple.mpegurl"),
                ("content-length", "1234"),
                ("x-custom", "v"),
                ("x-request-id", "abc"),
            ])
        );
        assert_eq!(
            decode_all(&mut d, &teapot).unwrap(),
            pairs(&[(":status", "418")])
        );
        assert_eq!(d.entries.len(), 0);
        assert!(
            block.windows(4).any(|w| w == [0x10, 0x0c, b'x', b'-']),
            "never indexed"
        );
        // A long value's length takes more than the prefix.
        let long = "v".repeat(300);
        let mut headers = HeaderMap::new();
        headers.insert("link", HeaderValue::from_str(&long).unwrap());
        let mut block = BytesMut::new();
        encode_response(StatusCode::NOT_FOUND, &headers, &mut block);
        let fields = decode_all(&mut d, &block).unwrap();
        assert_eq!(fields[1], ("link".to_string(), long));
    }
}
