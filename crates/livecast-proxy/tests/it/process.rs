//! The `livecast-proxy` binary as a process: what its `main` sets up beyond the library.

use std::time::Duration;

/// The balancer's process runs with transparent huge pages off (its allocator would otherwise
/// leave 2 MiB pages behind every burst of viewers: bench/memory.py).
#[tokio::test]
async fn the_process_runs_without_transparent_huge_pages() {
    let mut proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_livecast-proxy"))
        .args([
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
            "--backend=127.0.0.1:9",
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("the livecast-proxy binary starts");
    let pid = proxy.id().expect("a running process");
    let mut last = String::new();
    for _ in 0..100 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        last = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .unwrap_or_default()
            .to_string();
        if last.ends_with('0') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.try_wait().expect("wait").is_none(),
        "livecast-proxy exited"
    );
    assert_eq!(
        last.split_whitespace().collect::<Vec<_>>(),
        ["THP_enabled:", "0"]
    );
    proxy.kill().await.expect("kill");
}
