//! AMF0 command payloads (what rml_amf0 reads for the session) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(values) = rml_amf0::deserialize(&mut cursor) {
        // What was read can be written back.
        let _ = rml_amf0::serialize(&values);
    }
});
