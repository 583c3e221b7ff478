//! System tests: the whole stack in-process on port 0, real ffmpeg publishers, ffprobe and a
//! real browser as viewers.

mod bad_input;
mod browser;
mod continuity;
mod deploy;
mod e2e;
mod enhanced_rtmp;
mod first_publish;
mod k8s;
mod playback;
mod renditions;
mod rtmps;
mod support;
