//! Embeds the pinned hls.js build into the binary: the company network has no CDN, so the
//! front-end serves the player library itself. `player/package-lock.json` pins the version;
//! when `player/node_modules` is missing this runs `npm ci` once.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("player");
    let lib = dir.join("node_modules/hls.js/dist/hls.min.js");
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("package-lock.json").display()
    );
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "`npm ci` in {} failed with {s}; hls.js is needed for the player page",
                dir.display()
            ),
            Err(e) => panic!("cannot run npm ({e}); install Node.js and npm to build livecast-web"),
        }
    }
    assert!(lib.exists(), "{} is missing after npm ci", lib.display());
    println!("cargo:rustc-env=LIVECAST_HLSJS_PATH={}", lib.display());
}
