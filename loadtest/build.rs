//! Embeds the pinned chart library (uPlot) into the binary, for the offline HTML report: the
//! company network has no CDN. `report/package-lock.json` pins the version; when
//! `report/node_modules` is missing this runs `npm ci` once.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("report");
    let dist = dir.join("node_modules/uplot/dist");
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("package-lock.json").display()
    );
    println!("cargo:rerun-if-changed={}", dist.display());
    if !dist.join("uPlot.iife.min.js").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm ci` in {} failed with {s}", dir.display()),
            Err(e) => panic!("cannot run npm ({e}); install Node.js and npm to build the report"),
        }
    }
    for (file, var) in [
        ("uPlot.iife.min.js", "LIVECAST_UPLOT_JS"),
        ("uPlot.min.css", "LIVECAST_UPLOT_CSS"),
    ] {
        let path = dist.join(file);
        assert!(path.exists(), "{} is missing after npm ci", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
