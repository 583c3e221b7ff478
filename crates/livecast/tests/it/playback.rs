//! Signed playback URLs through the whole stack: a token opens its stream's playlist and
//! segments (in the query, then in the cookie the balancer sets), and nothing else; expired,
//! altered and missing tokens get 403 on the HTTP/1.1 fast path and on hyper's side alike;
//! `/api/token` asks an `auth_request`-style service and the viewer it names reaches the
//! access log, while the token reaches no log and no metric.

use std::net::SocketAddr;
use std::time::Duration;

use livecast_proxy::playback::{claims_for, Claims, Playback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{get, make_clip, parse_playlist, publish, start_stack_with, wait_until};

const SECRET: &str = "a-test-playback-secret-0123456789";

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on its own connection. HTTP/1.0 requests are served by hyper's side of the
/// balancer, HTTP/1.1 ones by its inline fast path: both must apply the same rules.
async fn request(addr: SocketAddr, version: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut text = format!("GET {path} HTTP/{version}\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    socket.write_all(text.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn mint(stream: &str, ttl_secs: i64, viewer: &str) -> String {
    let guard = Playback::new(SECRET.as_bytes()).expect("secret");
    let mut claims: Claims = claims_for(stream, Duration::ZERO, viewer, None);
    claims.expires = (claims.expires as i64 + ttl_secs) as u64;
    guard.mint(&claims).expect("token")
}

fn access_logs(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).expect("log dir").flatten() {
        all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    all
}

/// Starts the stack with a playback secret and `extra` flags, publishes `streams` and waits
/// until each has a segment listed.
async fn guarded_stack(
    extra: &[&str],
    streams: &[&str],
) -> (crate::support::Running, Vec<tokio::process::Child>) {
    let mut flags = vec![
        format!("--playback-secret={SECRET}"),
        "--container=ts".to_string(),
        "--part-ms=0".to_string(),
    ];
    flags.extend(extra.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let stack = start_stack_with(1, &flags).await;
    let clip = make_clip(stack.dir.path(), 20);
    let publishers = streams
        .iter()
        .map(|s| publish(&clip, &stack.rtmp_url(&format!("live/{s}"))))
        .collect();
    for stream in streams {
        let playlist = stack.hls_dir().join(format!("{stream}/index.m3u8"));
        wait_until("a segment is listed", Duration::from_secs(20), || {
            let listed = std::fs::read_to_string(&playlist)
                .map(|t| !parse_playlist(&t).segments.is_empty())
                .unwrap_or(false);
            async move { listed }
        })
        .await;
    }
    (stack, publishers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_url_opens_its_own_stream_until_it_expires() {
    let (stack, _publishers) = guarded_stack(&[], &["talk", "board"]).await;
    let addr = stack.addrs.proxy;
    let token = mint("talk", 600, "ann@corp.example");
    for version in ["1.1", "1.0"] {
        // No token: refused, on the playlist and on a segment.
        let refused = request(addr, version, "/hls/talk/index.m3u8", &[]).await;
        assert_eq!(refused.status, 403, "{version}: {refused:?}");
        assert!(String::from_utf8_lossy(&refused.body).contains("token"));

        // The token in the query: the playlist, and a cookie for the stream's requests.
        let opened = request(
            addr,
            version,
            &format!("/hls/talk/index.m3u8?token={token}"),
            &[],
        )
        .await;
        assert_eq!(opened.status, 200, "{version}: {opened:?}");
        let set = opened
            .header("set-cookie")
            .expect("a cookie for the segments");
        assert!(
            set.starts_with(&format!("livecast_playback={token}; Path=/hls/talk/;")),
            "{set}"
        );
        let playlist = parse_playlist(&String::from_utf8_lossy(&opened.body));
        let segment = format!("/hls/talk/{}", playlist.segments[0].1);
        let cookie = format!("livecast_playback={token}");

        let media = request(addr, version, &segment, &[("Cookie", &cookie)]).await;
        assert_eq!(media.status, 200, "{version}: {}", media.head);
        assert_eq!(media.body.first(), Some(&0x47), "an MPEG-TS segment");
        assert_eq!(request(addr, version, &segment, &[]).await.status, 403);

        // Another stream's requests: neither its cookie nor its query token opens them.
        let other = format!("/hls/board/index.m3u8?token={token}");
        assert_eq!(request(addr, version, &other, &[]).await.status, 403);
        assert_eq!(
            request(
                addr,
                version,
                "/hls/board/index.m3u8",
                &[("Cookie", &cookie)]
            )
            .await
            .status,
            403
        );

        // Expired, or altered in any way: refused on the playlist and on the segment.
        let expired = mint("talk", -5, "ann@corp.example");
        let longer = token.replacen(
            token.split('-').next().expect("expiry"),
            &(unix_now() + 86_400).to_string(),
            1,
        );
        for bad in [expired.as_str(), longer.as_str(), "1-2-3-4", "nonsense"] {
            let path = format!("/hls/talk/index.m3u8?token={bad}");
            assert_eq!(
                request(addr, version, &path, &[]).await.status,
                403,
                "{bad}"
            );
            let cookie = format!("livecast_playback={bad}");
            assert_eq!(
                request(addr, version, &segment, &[("Cookie", &cookie)])
                    .await
                    .status,
                403,
                "{bad}"
            );
        }
        let expired_answer = request(
            addr,
            version,
            &format!("/hls/talk/index.m3u8?token={expired}"),
            &[],
        )
        .await;
        assert!(String::from_utf8_lossy(&expired_answer.body).contains("expired"));
        // A forged viewer header is not believed.
        let forged = request(
            addr,
            version,
            &segment,
            &[("Cookie", &cookie), ("X-Livecast-Viewer", "mallory")],
        )
        .await;
        assert_eq!(forged.status, 200);
    }
    // The page and the stream list stay open: the page is how a viewer gets a token.
    assert_eq!(get(&stack.url("/")).await.status, 200);
    assert_eq!(get(&stack.url("/api/streams")).await.status, 200);

    let metrics = String::from_utf8_lossy(
        &get(&format!("http://{}/metrics", stack.addrs.proxy_admin))
            .await
            .body,
    )
    .into_owned();
    for reason in ["token_missing", "token_invalid", "token_expired"] {
        assert!(
            metrics.contains(&format!(
                "livecast_proxy_denied_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    let logs_dir = stack.dir.path().join("logs");
    let logs_dir2 = logs_dir.clone();
    wait_until(
        "the access log names the viewer",
        Duration::from_secs(5),
        || {
            let named = access_logs(&logs_dir2).contains("\"user.name\":\"ann@corp.example\"");
            async move { named }
        },
    )
    .await;
    let logs = access_logs(&logs_dir);
    assert!(!logs.contains(&token), "the token reached the access log");
    assert!(
        !logs.contains("mallory"),
        "a forged viewer reached the access log"
    );
    assert!(!metrics.contains(&token));
    stack.stop().await;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An `auth_request`-style service: `Bearer good` is bob, `Bearer nope` is refused, no
/// credential is 401. Keeps the `X-Original-URI` of every question.
async fn auth_service() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            if let Some(uri) = head.lines().find_map(|l| l.strip_prefix("x-original-uri:")) {
                seen.lock().expect("lock").push(uri.trim().to_string());
            }
            let answer = if head.contains("authorization: bearer good") {
                "HTTP/1.1 200 OK\r\nX-Auth-Request-User: bob@corp.example\r\n"
            } else if head.contains("authorization:") {
                "HTTP/1.1 403 Forbidden\r\n"
            } else {
                "HTTP/1.1 401 Unauthorized\r\n"
            };
            let _ = socket
                .write_all(
                    format!("{answer}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                )
                .await;
        }
    });
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_authentication_service_decides_who_gets_a_token_and_names_the_viewer() {
    let (auth, asked) = auth_service().await;
    let auth_url = format!("--auth-url=http://{auth}/check");
    let (stack, _publishers) = guarded_stack(&[&auth_url], &["talk"]).await;
    let addr = stack.addrs.proxy;
    for version in ["1.1", "1.0"] {
        let anonymous = request(addr, version, "/api/token?stream=talk", &[]).await;
        assert_eq!(anonymous.status, 401, "{anonymous:?}");
        assert!(anonymous.header("set-cookie").is_none());
        let refused = request(
            addr,
            version,
            "/api/token?stream=talk",
            &[("Authorization", "Bearer nope")],
        )
        .await;
        assert_eq!(refused.status, 403);
        assert!(refused.header("set-cookie").is_none());

        let granted = request(
            addr,
            version,
            "/api/token?stream=talk",
            &[("Authorization", "Bearer good")],
        )
        .await;
        assert_eq!(granted.status, 200, "{granted:?}");
        let grant: serde_json::Value = serde_json::from_slice(&granted.body).expect("json");
        assert_eq!(grant["viewer"], "bob@corp.example");
        let set = granted.header("set-cookie").expect("cookie");
        let cookie = set.split(';').next().expect("pair").to_string();
        assert!(cookie.starts_with("livecast_playback="), "{set}");
        assert!(set.contains("Path=/hls/talk/"), "{set}");
        let opened = request(
            addr,
            version,
            "/hls/talk/index.m3u8",
            &[("Cookie", &cookie)],
        )
        .await;
        assert_eq!(opened.status, 200, "{opened:?}");
    }
    assert_eq!(
        request(
            addr,
            "1.1",
            "/api/token",
            &[("Authorization", "Bearer good")]
        )
        .await
        .status,
        400,
        "a token is for one named stream"
    );
    assert!(asked
        .lock()
        .expect("lock")
        .iter()
        .all(|u| u == "/hls/talk/"));

    let logs_dir = stack.dir.path().join("logs");
    wait_until(
        "the access log names the viewer",
        Duration::from_secs(5),
        || {
            let named = access_logs(&logs_dir).contains("\"user.name\":\"bob@corp.example\"");
            async move { named }
        },
    )
    .await;
    stack.stop().await;

    // The authentication service down: nobody gets a token.
    let down = "--auth-url=http://127.0.0.1:9/check";
    let (stack, _publishers) = guarded_stack(&[down], &["late"]).await;
    let answer = request(
        stack.addrs.proxy,
        "1.1",
        "/api/token?stream=late",
        &[("Authorization", "Bearer good")],
    )
    .await;
    assert_eq!(answer.status, 503);
    assert!(answer.header("set-cookie").is_none());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_the_operator_page_and_leaves_metrics_open() {
    let stack = start_stack_with(1, &["--admin-token=op-token-for-tests"]).await;
    let admin = stack.addrs.proxy_admin;
    for path in ["/status", "/api/status"] {
        let refused = request(admin, "1.1", path, &[]).await;
        assert_eq!(refused.status, 401, "{path}");
        assert!(refused
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic")));
        let wrong = request(admin, "1.1", path, &[("Authorization", "Bearer nope")]).await;
        assert_eq!(wrong.status, 401, "{path}");
        let bearer = request(
            admin,
            "1.1",
            path,
            &[("Authorization", "Bearer op-token-for-tests")],
        )
        .await;
        assert_eq!(bearer.status, 200, "{path}");
        // A browser's Basic prompt: any user, the token as password ("ops:op-token-for-tests").
        let basic = request(
            admin,
            "1.1",
            path,
            &[("Authorization", "Basic b3BzOm9wLXRva2VuLWZvci10ZXN0cw==")],
        )
        .await;
        assert_eq!(basic.status, 200, "{path}");
    }
    // Open to Prometheus and health checks (/readyz may still say 503: not ready yet).
    for open in ["/metrics", "/readyz", "/livez"] {
        let status = request(admin, "1.1", open, &[]).await.status;
        assert!(status == 200 || status == 503, "{open}: {status}");
    }
    stack.stop().await;
}
