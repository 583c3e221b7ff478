//! The RTMP chunk reader on arbitrary bytes, fed in pieces whose sizes the input chooses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livecast_ingest::chunk::ChunkReader;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    let mut reader = ChunkReader::new();
    for piece in bytes.chunks(step) {
        reader.push(piece);
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    assert!(message.payload.len() <= livecast_ingest::chunk::MAX_MESSAGE);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
