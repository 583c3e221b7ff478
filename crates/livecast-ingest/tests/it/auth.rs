//! Publish authentication with a real ffmpeg publisher: the stream-keys file (and its reload)
//! and the on_publish callback. A refused publish writes nothing; the secret shows up in no
//! file name, playlist, metric or log line.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{get, make_clip, publish, start_ingest, wait_until, Ingest};

/// Where the audit trail (`livecast::audit`) is written while a test runs.
#[derive(Clone, Default)]
struct AuditLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for AuditLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("audit log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditLog {
    /// Captures the process's audit lines from now on (nextest runs each test in its own
    /// process, so the global subscriber is this test's).
    fn capture() -> Self {
        let log = Self::default();
        let writer = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("livecast::audit=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        log
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("audit log"))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Publishes the clip to `live/<name_and_query>`; returns whether ffmpeg succeeded.
async fn try_publish(ingest: &Ingest, clip: &Path, name_and_query: &str) -> bool {
    let url = format!("rtmp://{}/live/{name_and_query}", ingest.rtmp);
    publish(clip, &url)
        .wait()
        .await
        .expect("ffmpeg runs")
        .success()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.display().to_string());
            if path.is_dir() {
                out.extend(files_under(&path));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_allow_only_the_right_secret_and_follow_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# name secret\ncam Sup3r-secret\n").expect("keys");
    let clip = make_clip(dir.path(), 2);
    let ingest = start_ingest(&hls, &[&format!("--stream-keys={}", keys.display())]).await;

    assert!(!try_publish(&ingest, &clip, "cam").await, "no key");
    assert!(
        !try_publish(&ingest, &clip, "cam?key=wrong").await,
        "wrong key"
    );
    assert!(
        !try_publish(&ingest, &clip, "other?key=Sup3r-secret").await,
        "other stream"
    );
    assert!(
        files_under(&hls).is_empty(),
        "a refused publish writes nothing: {:?}",
        files_under(&hls)
    );
    assert!(try_publish(&ingest, &clip, "cam?key=Sup3r-secret").await);
    // A one-GOP clip is cut when the ingest sees the publisher leave, a moment after ffmpeg
    // has exited.
    let playlist = hls.join("cam/index.m3u8");
    wait_until(
        "the accepted publish's playlist",
        Duration::from_secs(10),
        || {
            let exists = playlist.exists();
            async move { exists }
        },
    )
    .await;

    // The file changes: the new secret works at once, the old one no longer does.
    std::fs::write(&keys, "cam N3w-secret-longer\n").expect("keys");
    assert!(!try_publish(&ingest, &clip, "cam?key=Sup3r-secret").await);
    assert!(try_publish(&ingest, &clip, "cam?key=N3w-secret-longer").await);

    let metrics =
        String::from_utf8_lossy(&get(&format!("http://{}/metrics", ingest.admin)).await.body)
            .into_owned();
    assert!(
        metrics.contains("livecast_ingest_rejected_total{reason=\"bad_key\"} 4"),
        "{metrics}"
    );
    ingest.stop().await;
    for path in files_under(&hls) {
        assert!(!path.contains("secret"), "{path}");
        if path.ends_with(".m3u8") {
            let text = std::fs::read_to_string(&path).expect("playlist");
            assert!(!text.contains("secret") && !text.contains("key="), "{text}");
        }
    }
    assert!(!metrics.contains("secret"));
}

/// A callback server: answers 204 when the form carries `key=good`, 403 otherwise, and keeps
/// every form it got.
async fn callback_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let forms = Arc::new(Mutex::new(Vec::new()));
    let seen = forms.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let form = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some(body.to_string());
                }
            };
            let Some(form) = form else { continue };
            let allowed = form.split('&').any(|pair| pair == "key=good");
            seen.lock().expect("lock").push(form);
            let status = if allowed {
                "204 No Content"
            } else {
                "403 Forbidden"
            };
            let _ = socket
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (addr, forms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_publish_callback_decides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 2);
    let (callback, forms) = callback_server().await;
    let ingest = start_ingest(&hls, &[&format!("--on-publish=http://{callback}/auth")]).await;

    assert!(!try_publish(&ingest, &clip, "show?key=bad").await);
    assert!(
        !hls.join("show").exists(),
        "a refused publish writes nothing"
    );
    assert!(try_publish(&ingest, &clip, "show?key=good&user=ann").await);
    // A one-GOP clip is cut when the ingest sees the publisher leave, a moment after ffmpeg
    // has exited.
    let playlist = hls.join("show/index.m3u8");
    wait_until(
        "the accepted publish's playlist",
        Duration::from_secs(10),
        || {
            let exists = playlist.exists();
            async move { exists }
        },
    )
    .await;
    ingest.stop().await;

    let forms = forms.lock().expect("lock").clone();
    assert_eq!(forms.len(), 2, "{forms:?}");
    for part in [
        "call=publish",
        "app=live",
        "name=show",
        "addr=127.0.0.1",
        "user=ann",
        "key=good",
    ] {
        assert!(
            forms[1].split('&').any(|p| p == part),
            "{part} in {}",
            forms[1]
        );
    }

    // An unreachable callback refuses rather than lets everyone in.
    let ingest = start_ingest(&hls, &["--on-publish=http://127.0.0.1:9/auth"]).await;
    assert!(!try_publish(&ingest, &clip, "late?key=good").await);
    ingest.stop().await;
    assert!(!hls.join("late").exists());
}

fn count(metrics: &str, result: &str) -> u64 {
    let prefix = format!("livecast_ingest_publish_attempts_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics_of(ingest: &Ingest) -> String {
    String::from_utf8_lossy(&get(&format!("http://{}/metrics", ingest.admin)).await.body)
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_outside_the_allow_list_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 2);
    // The test's publisher comes from 127.0.0.1: a loopback address outside the list.
    let ingest = start_ingest(&hls, &["--publish-allow-cidr=127.0.0.2/32,10.0.0.0/8"]).await;
    assert!(!try_publish(&ingest, &clip, "cam").await);
    let metrics = metrics_of(&ingest).await;
    assert_eq!(count(&metrics, "address_not_allowed"), 1, "{metrics}");
    assert_eq!(count(&metrics, "accepted"), 0, "{metrics}");
    ingest.stop().await;
    assert!(
        files_under(&hls).is_empty(),
        "a refused publish writes nothing: {:?}",
        files_under(&hls)
    );

    // Even with a stream key, an explicit list still applies.
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "cam k3y-long-enough\n").expect("keys");
    let ingest = start_ingest(
        &hls,
        &[
            "--publish-allow-cidr=10.0.0.0/8",
            &format!("--stream-keys={}", keys.display()),
        ],
    )
    .await;
    assert!(!try_publish(&ingest, &clip, "cam?key=k3y-long-enough").await);
    ingest.stop().await;
    assert!(files_under(&hls).is_empty());

    // The publisher's own address in the list lets it in; the attempt is counted.
    let ingest = start_ingest(&hls, &["--publish-allow-cidr=127.0.0.1/32"]).await;
    assert!(try_publish(&ingest, &clip, "cam").await);
    let metrics = metrics_of(&ingest).await;
    assert_eq!(count(&metrics, "accepted"), 1, "{metrics}");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_guessing_keys_is_refused_even_with_the_right_key_until_its_window_passes() {
    let audit = AuditLog::capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "cam Sup3r-secret\n").expect("keys");
    let clip = make_clip(dir.path(), 2);
    let ingest = start_ingest(
        &hls,
        &[
            &format!("--stream-keys={}", keys.display()),
            "--publish-max-failures=3",
            "--publish-failure-window-secs=3",
        ],
    )
    .await;
    for guess in ["a", "b", "c"] {
        assert!(!try_publish(&ingest, &clip, &format!("cam?key={guess}")).await);
    }
    // Blocked: the right key is not even checked.
    assert!(!try_publish(&ingest, &clip, "cam?key=Sup3r-secret").await);
    let metrics = metrics_of(&ingest).await;
    assert_eq!(count(&metrics, "bad_key"), 3, "{metrics}");
    assert_eq!(count(&metrics, "rate_limited"), 1, "{metrics}");
    assert!(files_under(&hls).is_empty());
    // Once the window has passed since the last failure, the right key works again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(try_publish(&ingest, &clip, "cam?key=Sup3r-secret").await);
    let metrics = metrics_of(&ingest).await;
    assert_eq!(count(&metrics, "accepted"), 1, "{metrics}");
    assert!(!metrics.contains("Sup3r"));
    ingest.stop().await;

    // One audit line per attempt, with the stream, the client and the result, never the key.
    let lines = audit.lines();
    let with = |result: &str| {
        lines
            .iter()
            .filter(|l| l.contains("stream=cam") && l.contains("client=127.0.0.1"))
            .filter(|l| l.contains(&format!("result=\"{result}\"")))
            .count()
    };
    assert_eq!(with("bad_key"), 3, "{lines:#?}");
    assert_eq!(with("rate_limited"), 1, "{lines:#?}");
    assert_eq!(with("accepted"), 1, "{lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("Sup3r")),
        "the key is in the audit trail: {lines:#?}"
    );
}
