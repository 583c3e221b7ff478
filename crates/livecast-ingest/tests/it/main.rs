//! The ingest's own integration tests: the service alone on port 0, real ffmpeg publishers,
//! ffprobe reading what it wrote. What needs the whole stack is in `crates/livecast/tests/it`.

mod auth;
mod disk_full;
mod publisher;
mod reconnect;
mod rtmp_chunks;
mod support;
