//! Exactly N distinct documents, whatever happens on the way.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{append, es, eventually, http_get, log_line, metric, start};

fn seqs(stand: &es::Stand) -> HashSet<usize> {
    stand
        .docs
        .lock()
        .expect("lock")
        .values()
        .filter_map(|d| {
            d["url.path"]
                .as_str()?
                .strip_prefix("/hls/cam/s-")?
                .strip_suffix(".ts")?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the stand holds `n` documents, then checks that a moment later it still holds
/// exactly `n`, one for each line written.
async fn delivered_exactly_once(stand: &es::Stand, n: usize, within: Duration) {
    eventually("every line delivered", within, || stand.count() >= n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stand.count(), n, "exactly N documents");
    assert_eq!(
        seqs(stand),
        (0..n).collect::<HashSet<_>>(),
        "every line once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_and_copytruncate_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    let shipper = start(dir.path(), Some(es_addr), &[]).await;
    const N: usize = 3000;
    let log = logs.join("web-1.log");
    for seq in 0..N {
        append(&log, &log_line(seq, "s1"));
        if seq == 1000 {
            // logrotate's default: rename, then the writer opens a fresh file.
            std::fs::rename(&log, logs.join("web-1.1000.log")).expect("rename");
        }
        if seq == 2000 {
            // copytruncate: copy the live file aside, then empty it in place.
            std::fs::copy(&log, logs.join("web-1.2000.log")).expect("copy");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .expect("open")
                .set_len(0)
                .expect("truncate");
        }
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    delivered_exactly_once(&stand, N, Duration::from_secs(20)).await;
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_down_then_back_delivers_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    stand.down_for.store(6, Ordering::SeqCst);
    stand.throttle_items.store(150, Ordering::SeqCst);
    let shipper = start(dir.path(), Some(es_addr), &[]).await;
    const N: usize = 1200;
    let text: String = (0..N).map(|s| log_line(s, "s1")).collect();
    crate::append(&dir.path().join("logs/web-2.log"), &text);
    eventually("every line delivered", Duration::from_secs(30), || {
        stand.count() >= N
    })
    .await;
    assert_eq!(seqs(&stand), (0..N).collect::<HashSet<_>>());
    // The stand holds a batch before its answer reaches the shipper, which counts the lines
    // shipped only then: wait for the count rather than read it once.
    metric_until(
        shipper.admin,
        "livecast_logship_lines_shipped_total{sink=\"elasticsearch\"}",
        "every line counted as shipped",
        |shipped| shipped == N as f64,
    )
    .await;
    let metrics = http_get(shipper.admin, "/metrics").await;
    assert!(
        !metrics.contains("livecast_logship_lines_failed_total{sink=\"elasticsearch\"} 0"),
        "{metrics}"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_rejected_lines_are_dead_lettered_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    *stand.reject.lock().expect("lock") = Some("s-7.ts".into());
    let shipper = start(dir.path(), Some(es_addr), &[]).await;
    let log = dir.path().join("logs/web-3.log");
    let mut text = String::new();
    for seq in 0..20 {
        text.push_str(&log_line(seq, "s1"));
        if seq == 10 {
            text.push_str("this is not json\n");
        }
    }
    append(&log, &text);
    eventually("the good lines delivered", Duration::from_secs(10), || {
        stand.count() >= 19
    })
    .await;
    let dead = dir.path().join("state/dead-letter.ndjson");
    eventually("two dead letters", Duration::from_secs(5), || {
        std::fs::read_to_string(&dead)
            .map(|t| t.lines().count() == 2)
            .unwrap_or(false)
    })
    .await;
    let dead = std::fs::read_to_string(&dead).expect("dead letters");
    assert!(
        dead.contains("this is not json") && dead.contains("s-7.ts"),
        "{dead}"
    );
    assert_eq!(stand.count(), 19);
    let metrics = http_get(shipper.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_logship_malformed_lines_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("livecast_logship_lines_dead_lettered_total{sink=\"elasticsearch\"} 1"),
        "{metrics}"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_creates_no_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    // Slow answers widen the window between an acknowledgement and its checkpoint.
    stand.delay_ms.store(150, Ordering::SeqCst);
    const N: usize = 4000;
    let text: String = (0..N).map(|s| log_line(s, "s1")).collect();
    append(&dir.path().join("logs/web-4.log"), &text);
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_livecast-logship"))
            .arg("--admin-listen=127.0.0.1:0")
            .arg(format!("--log-dir={}", dir.path().join("logs").display()))
            .arg(format!(
                "--state-dir={}",
                dir.path().join("state").display()
            ))
            .arg(format!("--elasticsearch-url=http://{es_addr}"))
            .arg("--batch-lines=300")
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start the shipper")
    };
    let mut first = spawn();
    eventually("some lines delivered", Duration::from_secs(10), || {
        stand.count() >= 1000
    })
    .await;
    // SIGKILL: no shutdown, no flush, whatever was in flight is lost to this process.
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let delivered_before = stand.count();
    assert!(delivered_before < N, "killed before the end");
    let mut second = spawn();
    eventually("every line delivered", Duration::from_secs(30), || {
        stand.count() >= N
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.kill().expect("kill");
    second.wait().expect("reap");
    assert_eq!(stand.count(), N, "exactly N documents");
    assert_eq!(seqs(&stand), (0..N).collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_sessions_not_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let shipper = start(dir.path(), None, &["--viewer-window-secs=30"]).await;
    // Five viewers behind one company NAT address, one of them twice.
    let text: String = ["a", "b", "c", "d", "e", "a"]
        .iter()
        .enumerate()
        .map(|(i, s)| log_line(i, s))
        .collect();
    append(&dir.path().join("logs/web-5.log"), &text);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let report = http_get(shipper.admin, "/api/viewers").await;
        let json: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        if json["streams"]["cam"]["concurrent"] == 5 {
            assert_eq!(json["streams"]["cam"]["unique"], 5);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let metrics = http_get(shipper.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_viewers_concurrent{stream=\"cam\"} 5"),
        "{metrics}"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_logs_are_archived_after_shipping_and_active_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    let rotated: String = (0..50).map(|s| log_line(s, "s1")).collect();
    let active: String = (50..60).map(|s| log_line(s, "s1")).collect();
    append(&logs.join("web-7.1700000000000.log"), &rotated);
    append(&logs.join("web-7.log"), &active);
    let archive = dir.path().join("archive");
    let shipper = start(
        dir.path(),
        Some(es_addr),
        &[
            &format!("--archive={}", archive.display()),
            "--archive-after-secs=0",
        ],
    )
    .await;
    eventually("every line delivered", Duration::from_secs(10), || {
        stand.count() >= 60
    })
    .await;
    eventually("the rotated log archived", Duration::from_secs(15), || {
        !logs.join("web-7.1700000000000.log").exists()
    })
    .await;
    let copy =
        std::fs::read_to_string(archive.join("web-7.1700000000000.log")).expect("archived copy");
    assert_eq!(copy, rotated, "the archive holds the file as it was");
    assert!(
        logs.join("web-7.log").exists(),
        "the active log is never archived"
    );
    assert_eq!(stand.count(), 60);
    // The file is gone a moment before the shipper counts it archived.
    metric_until(
        shipper.admin,
        "livecast_logship_files_archived_total",
        "the archived log counted",
        |archived| archived == 1.0,
    )
    .await;
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spill_a_log_deleted_before_shipping_is_counted_as_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    // The sink stays down, so nothing of the file is acknowledged.
    stand.down_for.store(usize::MAX, Ordering::SeqCst);
    let shipper = start(
        dir.path(),
        Some(es_addr),
        &["--spill-max-mb=0", "--drain-secs=1"],
    )
    .await;
    let text: String = (0..100).map(|s| log_line(s, "s1")).collect();
    append(&logs.join("web-8.1700000000000.log"), &text);
    let mut seen = false;
    for _ in 0..100 {
        if http_get(shipper.admin, "/metrics")
            .await
            .contains("livecast_logship_files 1")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the shipper follows the file");
    std::fs::remove_file(logs.join("web-8.1700000000000.log")).expect("delete");
    let expected = format!("livecast_logship_lost_bytes_total {}", text.len());
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(shipper.admin, "/metrics").await;
        if metrics.contains(&expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(&expected), "{metrics}");
    shipper.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), shipper.task).await;
}

/// Polls a metric until `check` holds.
async fn metric_until(
    admin: std::net::SocketAddr,
    sample: &str,
    what: &str,
    check: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(admin, sample).await;
        if check(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what} ({sample} = {value})\n{}",
            http_get(admin, "/metrics").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_sink_spills_to_disk_across_a_restart_and_the_logs_may_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    stand.down.store(true, Ordering::SeqCst);
    let flags = ["--spill-after-secs=1", "--drain-secs=1"];
    let shipper = start(dir.path(), Some(es_addr), &flags).await;
    const N: usize = 2000;
    // Three viewers behind one address.
    let text: String = (0..N)
        .map(|s| log_line(s, ["a", "b", "c"][s % 3]))
        .collect();
    append(&logs.join("web-5.log"), &text);
    metric_until(
        shipper.admin,
        "livecast_logship_lines_spilled_total",
        "every line is in the spill",
        |v| v == N as f64,
    )
    .await;
    assert_eq!(stand.count(), 0, "the sink is down");
    assert!(metric(shipper.admin, "livecast_logship_spill_bytes").await > 0.0);
    // Reading went on while the sink was down, so the viewer count is live.
    let viewers = http_get(shipper.admin, "/api/viewers").await;
    let viewers: serde_json::Value = serde_json::from_str(&viewers).expect("json");
    assert_eq!(viewers["streams"]["cam"]["concurrent"], 3, "{viewers}");
    // The log's lines are safe in the spill: its rotation may remove it without a loss.
    metric_until(
        shipper.admin,
        "livecast_logship_bytes_behind",
        "the log checkpoint is at its end",
        |v| v == 0.0,
    )
    .await;
    std::fs::remove_file(logs.join("web-5.log")).expect("rm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(shipper.admin, "livecast_logship_lost_bytes_total").await,
        0.0
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
    assert!(
        std::fs::read_dir(dir.path().join("state/spill"))
            .expect("spill dir")
            .count()
            > 0,
        "the spill outlives the process"
    );

    // The next run sends the spill once the sink is back.
    let shipper = start(dir.path(), Some(es_addr), &flags).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stand.down.store(false, Ordering::SeqCst);
    eventually("every line delivered", Duration::from_secs(30), || {
        stand.count() >= N
    })
    .await;
    metric_until(
        shipper.admin,
        "livecast_logship_spill_bytes",
        "the spill is empty",
        |v| v == 0.0,
    )
    .await;
    assert_eq!(
        seqs(&stand),
        (0..N).collect::<HashSet<_>>(),
        "every line once"
    );
    assert_eq!(stand.count(), N);
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/spill"))
            .expect("spill dir")
            .count(),
        0
    );
    // Shipping goes on directly.
    append(&logs.join("web-6.log"), &log_line(N, "d"));
    eventually("a new line delivered", Duration::from_secs(10), || {
        stand.count() == N + 1
    })
    .await;
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spill_drops_the_oldest_lines_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    stand.down.store(true, Ordering::SeqCst);
    let shipper = start(
        dir.path(),
        Some(es_addr),
        &["--spill-after-secs=1", "--spill-max-mb=1"],
    )
    .await;
    // About 2.3 MB of lines: more than twice the cap.
    const N: usize = 6000;
    let text: String = (0..N).map(|s| log_line(s, "a")).collect();
    append(&logs.join("web-7.log"), &text);
    metric_until(
        shipper.admin,
        "livecast_logship_lines_spilled_total",
        "every line went through the spill",
        |v| v == N as f64,
    )
    .await;
    let dropped =
        metric(shipper.admin, "livecast_logship_spill_dropped_lines_total").await as usize;
    assert!(dropped > 0 && dropped < N, "dropped {dropped}");
    let on_disk: u64 = std::fs::read_dir(dir.path().join("state/spill"))
        .expect("spill dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(on_disk <= 1024 * 1024, "the cap holds: {on_disk} bytes");
    stand.down.store(false, Ordering::SeqCst);
    eventually("the kept lines delivered", Duration::from_secs(30), || {
        stand.count() >= N - dropped
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stand.count(), N - dropped, "kept + dropped = written");
    assert!(seqs(&stand).contains(&(N - 1)), "the newest lines are kept");
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_elasticsearch_trusts_the_given_ca_and_only_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let (plain, stand) = es::start().await;
    let ca = dir.path().join("company-ca.pem");
    let tls = es::start_tls(plain, &ca).await;
    const N: usize = 700;
    let text: String = (0..N).map(|s| log_line(s, "s1")).collect();
    append(&dir.path().join("logs/web-9.log"), &text);

    // Trusting another CA, the stand-in's certificate is refused: nothing goes.
    let other_ca = dir.path().join("other-ca.pem");
    let other_cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    std::fs::write(&other_ca, other_cert.cert.pem()).expect("write");
    let other_flag = format!("--elasticsearch-ca={}", other_ca.display());
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(other.path().join("logs")).expect("mkdir");
    std::fs::copy(
        dir.path().join("logs/web-9.log"),
        other.path().join("logs/web-9.log"),
    )
    .expect("copy");
    let untrusting = crate::start_with_url(
        other.path(),
        &format!("https://{tls}"),
        &["--drain-secs=1", "--spill-max-mb=0", &other_flag],
    )
    .await;
    metric_until(
        untrusting.admin,
        "livecast_logship_lines_failed_total{sink=\"elasticsearch\"}",
        "an unverified https delivery fails",
        |v| v > 0.0,
    )
    .await;
    assert_eq!(
        stand.count(),
        0,
        "nothing reached a server it does not trust"
    );
    untrusting.shutdown.cancel();
    untrusting.task.await.expect("join").expect("clean exit");

    let ca_flag = format!("--elasticsearch-ca={}", ca.display());
    let shipper = crate::start_with_url(dir.path(), &format!("https://{tls}"), &[&ca_flag]).await;
    eventually(
        "every line delivered over https",
        Duration::from_secs(20),
        || stand.count() >= N,
    )
    .await;
    assert_eq!(seqs(&stand), (0..N).collect::<HashSet<_>>());
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

/// logrotate's own schemes, one after the other on one log while lines are still unshipped
/// (the sink answers slowly): rename to `.1`, copytruncate to a `-YYYYMMDD` name (dateext),
/// a `delaycompress` cycle (the older rotation gzipped to `.2.gz`, the live log renamed to
/// `.1`) and a rename to a name no glob covers. Every line arrives once; the gzipped file is
/// never read as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_schemes_deliver_every_line_exactly_once() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let (es_addr, stand) = es::start().await;
    stand.delay_ms.store(100, Ordering::SeqCst);
    let shipper = start(dir.path(), Some(es_addr), &[]).await;
    const N: usize = 4000;
    let log = logs.join("access.log");
    let rotated = logs.join("access.log.1");
    for seq in 0..N {
        append(&log, &log_line(seq, "s1"));
        match seq {
            // The default: rename, then the writer opens a fresh file.
            800 => std::fs::rename(&log, &rotated).expect("rename"),
            // copytruncate with dateext.
            1600 => {
                std::fs::copy(&log, logs.join("access.log-20261202")).expect("copy");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .expect("open")
                    .set_len(0)
                    .expect("truncate");
            }
            // compress with delaycompress, a period later (the older rotation is shipped by
            // then): `.1` becomes `.2.gz`, the live log becomes `.1`.
            2400 => {
                eventually(
                    "the first rotation shipped",
                    Duration::from_secs(20),
                    || stand.count() >= 801,
                )
                .await;
                let plain = std::fs::read(&rotated).expect("read .1");
                let mut gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(logs.join("access.log.2.gz")).expect("create .gz"),
                    flate2::Compression::fast(),
                );
                gz.write_all(&plain).expect("gzip");
                gz.finish().expect("gzip");
                std::fs::remove_file(&rotated).expect("remove .1");
                std::fs::rename(&log, &rotated).expect("rename");
            }
            // Renamed to a name no glob covers, while it is still being shipped.
            3200 => std::fs::rename(&log, logs.join("access.old")).expect("rename"),
            _ => {}
        }
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    delivered_exactly_once(&stand, N, Duration::from_secs(40)).await;
    assert_eq!(
        metric(shipper.admin, "livecast_logship_malformed_lines_total").await,
        0.0,
        "the gzipped rotation must not be read"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}

/// The index template goes in before the first document (so `client.ip` is an `ip` from the
/// first line on), and an operator's own template of that name is left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_template_goes_in_first_and_an_existing_one_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let (es, stand) = es::start().await;
    append(&dir.path().join("logs/web-1.log"), &log_line(1, "s1"));
    let shipper = start(dir.path(), Some(es), &[]).await;
    eventually("the line delivered", Duration::from_secs(10), || {
        stand.count() == 1
    })
    .await;
    assert_eq!(
        stand.calls.lock().unwrap()[0],
        "template",
        "template before the first bulk"
    );
    let installed = stand.templates.lock().unwrap()["livecast-access"].clone();
    assert_eq!(
        installed["index_patterns"],
        serde_json::json!(["livecast-access*"])
    );
    assert_eq!(
        installed["template"]["mappings"]["properties"]["client"]["properties"]["ip"]["type"],
        "ip"
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");

    // The operator changed it: a restarted shipper keeps theirs and ships on.
    stand.templates.lock().unwrap().insert(
        "livecast-access".into(),
        serde_json::json!({"index_patterns": ["mine*"]}),
    );
    append(&dir.path().join("logs/web-1.log"), &log_line(2, "s1"));
    let shipper = start(dir.path(), Some(es), &[]).await;
    eventually("the second line delivered", Duration::from_secs(10), || {
        stand.count() == 2
    })
    .await;
    assert_eq!(
        stand.templates.lock().unwrap()["livecast-access"]["index_patterns"],
        serde_json::json!(["mine*"])
    );
    shipper.shutdown.cancel();
    shipper.task.await.expect("join").expect("clean exit");
}
