//! Backend lifecycle: failures, membership changes, draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{backend, body, eventually, get_path, start, status, FakeDns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_during_a_stream_costs_no_viewer_an_error() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = FakeDns::default();
    dns.set("web", &[a.addr, b.addr]);
    let proxy = start(&dns, &["--balance=round-robin"]).await;
    eventually("both backends healthy", || async {
        get_path(proxy.admin, "/metrics")
            .await
            .contains("livecast_proxy_backends{state=\"healthy\"} 2")
    })
    .await;
    let mut served_by_a_after_kill = 0;
    for i in 0..200 {
        if i == 50 {
            a.stop.cancel();
        }
        let r = get_path(proxy.addr, "/hls/x/seg.ts").await;
        assert_eq!(status(&r), "200", "request {i}: {r}");
        if i > 60 && body(&r).starts_with("a ") {
            served_by_a_after_kill += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(served_by_a_after_kill, 0);
    let metrics = get_path(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_proxy_backends{state=\"ejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("livecast_proxy_retries_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_before_any_byte_is_retried_and_ejects_the_backend() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = FakeDns::default();
    dns.set("web", &[a.addr, b.addr]);
    let proxy = start(&dns, &["--balance=round-robin", "--eject-after-errors=3"]).await;
    // Both answer 503 on /fail, so those fail; but a plain path always succeeds.
    for _ in 0..4 {
        assert_eq!(status(&get_path(proxy.addr, "/fail").await), "503");
    }
    let metrics = get_path(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_proxy_retries_total 4"),
        "each 503 was tried twice: {metrics}"
    );
    assert!(
        metrics.contains("livecast_proxy_ejections_total{detection=\"passive\"} 2"),
        "{metrics}"
    );
    // Active checks bring them back.
    eventually("both healthy again", || async {
        get_path(proxy.admin, "/metrics")
            .await
            .contains("livecast_proxy_backends{state=\"healthy\"} 2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_shifts_traffic() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &[]).await;
    for _ in 0..5 {
        assert!(body(&get_path(proxy.addr, "/").await).starts_with("a "));
    }
    // Scale-out: the new address is discovered, checked and put in service.
    dns.set("web", &[a.addr, b.addr]);
    eventually("b gets traffic", || async {
        let mut saw_b = false;
        for _ in 0..10 {
            saw_b |= body(&get_path(proxy.addr, "/").await).starts_with("b ");
        }
        saw_b
    })
    .await;
    // Scale-in: a vanishes; it drains and leaves the pool.
    dns.set("web", &[b.addr]);
    eventually("a has left the pool", || async {
        let s = get_path(proxy.admin, "/api/status").await;
        !s.contains(&a.addr.to_string())
    })
    .await;
    for _ in 0..10 {
        assert!(body(&get_path(proxy.addr, "/").await).starts_with("b "));
    }
    let metrics = get_path(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_proxy_membership_changes_total 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_an_in_flight_segment_finish() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &[]).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(async move { get_path(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    dns.set("web", &[b.addr]);
    eventually("a is draining and b serves", || async {
        get_path(proxy.admin, "/api/status")
            .await
            .contains("\"state\":\"draining\"")
            && body(&get_path(proxy.addr, "/").await).starts_with("b ")
    })
    .await;
    let response = slow.await.expect("join");
    assert_eq!(status(&response), "200");
    let payload = body(&response);
    // Chunked transfer: count the payload bytes, not the chunk framing.
    assert_eq!(
        payload.matches('x').count(),
        10_000,
        "the whole segment arrived"
    );
    eventually("a is gone once its request finished", || async {
        !get_path(proxy.admin, "/api/status")
            .await
            .contains(&a.addr.to_string())
    })
    .await;
}

#[tokio::test]
async fn status_page_shows_front_ends() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &[]).await;
    let page = get_path(proxy.admin, "/status").await;
    assert_eq!(status(&page), "200");
    assert!(page.contains("Front-ends"));
    let api = get_path(proxy.admin, "/api/status").await;
    let json: serde_json::Value = serde_json::from_str(body(&api)).expect("json");
    assert_eq!(json["front_ends"][0]["address"], a.addr.to_string());
    assert_eq!(json["front_ends"][0]["state"], "healthy");
    assert!(json["viewers"].is_null(), "no shipper configured");
}

/// The operator page has each stream's viewers now, from the shipper's report.
#[tokio::test]
async fn status_page_shows_viewers_from_the_shipper() {
    let shipper = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shipper_addr = shipper.local_addr().expect("addr");
    let report = axum::Router::new().route(
        "/api/viewers",
        axum::routing::get(|| async {
            r#"{"window_secs":30,"streams":{"cam":{"concurrent":3,"peak":5,"unique":7}}}"#
        }),
    );
    tokio::spawn(async move { axum::serve(shipper, report).await });
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let url = format!("--viewers-url=http://{shipper_addr}/api/viewers");
    let proxy = start(&dns, &[&url]).await;
    status_until(proxy.admin, "viewers", |json| {
        json["viewers"]["streams"]["cam"]["concurrent"] == 3
    })
    .await;
}

/// With `--backend-admin-port`, the operator page reads the front-ends' operator stream list
/// (with publishers) from their admin port, not the public one.
#[tokio::test]
async fn status_page_reads_the_front_ends_operator_list_on_their_admin_port() {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_port = admin.local_addr().expect("addr").port();
    let list = axum::Router::new().route(
        "/api/streams",
        axum::routing::get(|| async {
            r#"{"streams":[{"name":"cam","publisher":"10.0.0.9:50000"}]}"#
        }),
    );
    tokio::spawn(async move { axum::serve(admin, list).await });
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let flag = format!("--backend-admin-port={admin_port}");
    let proxy = start(&dns, &[&flag]).await;
    status_until(proxy.admin, "operator list", |json| {
        json["streams"]["streams"][0]["publisher"] == "10.0.0.9:50000"
    })
    .await;
}

/// Polls the balancer's `/api/status` until `done` holds (5 s at most).
async fn status_until(
    admin: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let api = get_path(admin, "/api/status").await;
        let json: serde_json::Value = serde_json::from_str(body(&api)).expect("json");
        if done(&json) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} in {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A front-end whose link goes dead (a cable pulled, a host frozen): it stops answering
/// anything, health checks included, without closing a connection. A request already
/// waiting on it goes to another front-end once the health checks eject it, instead of
/// waiting for as long as the link stays dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_front_end_that_stopped_answering_go_elsewhere_once_it_is_ejected() {
    let good = backend("good").await;
    let frozen = Arc::new(AtomicBool::new(false));
    let hole = {
        let frozen = frozen.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(axum::routing::get(move || {
            let frozen = frozen.clone();
            async move {
                if frozen.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                "hole"
            }
        }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let dns = FakeDns::default();
    dns.set("web", &[good.addr, hole]);
    let proxy = start(
        &dns,
        &[
            "--balance=round-robin",
            "--health-timeout-ms=200",
            "--unhealthy-after=2",
        ],
    )
    .await;
    eventually("both front-ends in rotation", || async {
        get_path(proxy.admin, "/metrics")
            .await
            .contains("livecast_proxy_backends{state=\"healthy\"} 2")
    })
    .await;
    frozen.store(true, Ordering::SeqCst);
    // Round robin: half of these wait on the dead front-end (a held blocking reload among
    // them, which no first-byte limit could cut short).
    let started = std::time::Instant::now();
    let requests = (0..4).map(|i| {
        let addr = proxy.addr;
        let path = if i % 2 == 0 {
            "/hls/talk/index.m3u8?_HLS_msn=9&_HLS_part=0".to_string()
        } else {
            format!("/hls/talk/seg-{i}.m4s")
        };
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(8), get_path(addr, &path)).await
        })
    });
    let mut answers = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        answers.push(request.await.expect("join"));
    }
    let waited = started.elapsed();
    for answer in &answers {
        let answer = answer
            .as_ref()
            .expect("a request was still waiting on the dead front-end after 8 s");
        assert_eq!(status(answer), "200", "{answer}");
        assert!(body(answer).starts_with("uri=/hls/talk/"), "{answer}");
    }
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    frozen.store(false, Ordering::SeqCst);
}
