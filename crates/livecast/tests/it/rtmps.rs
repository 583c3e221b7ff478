//! RTMPS: a real ffmpeg publishes over TLS, checking the ingest's certificate against the CA it
//! trusts; the stream decodes through the balancer. With a CA that did not sign the
//! certificate, ffmpeg refuses the connection and nothing is written.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{ffprobe, make_clip, start_stack_with, wait_until};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1; returns (ca, cert, key).
fn issue(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, leaf.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// Publishes `clip` over RTMPS, verifying the server against `ca`.
async fn publish_tls(clip: &Path, url: &str, ca: &Path) -> std::process::Output {
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", "-tls_verify", "1", "-ca_file"])
        .arg(ca)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("ffmpeg runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ffmpeg_publishes_over_rtmps_and_refuses_a_certificate_it_does_not_trust() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = issue(certs.path(), "company");
    let (other_ca, _, _) = issue(certs.path(), "other");
    let stack = start_stack_with(
        1,
        &[
            "--rtmps-listen=127.0.0.1:0",
            &format!("--tls-cert={}", cert.display()),
            &format!("--tls-key={}", key.display()),
            "--container=ts",
            "--part-ms=0",
        ],
    )
    .await;
    let rtmps = stack.addrs.rtmps.expect("rtmps listener");
    let clip = make_clip(stack.dir.path(), 4);

    // The name matches the certificate; the CA is not the one that signed it.
    let url = |stream: &str| format!("rtmps://localhost:{}/live/{stream}", rtmps.port());
    let refused = publish_tls(&clip, &url("forged"), &other_ca).await;
    assert!(
        !refused.status.success(),
        "ffmpeg must refuse the certificate"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("verif"), "{stderr}");
    assert!(!stack.hls_dir().join("forged").exists());

    let published = publish_tls(&clip, &url("secure"), &ca).await;
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let playlist = stack.hls_dir().join("secure/index.m3u8");
    wait_until("the playlist ends", Duration::from_secs(15), || {
        let ended = std::fs::read_to_string(&playlist)
            .map(|t| t.contains("#EXT-X-ENDLIST"))
            .unwrap_or(false);
        async move { ended }
    })
    .await;
    let (streams, duration) = ffprobe(&stack.url("/hls/secure/index.m3u8"));
    let kinds: Vec<&str> = streams.iter().map(|s| s.0.as_str()).collect();
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{streams:?}"
    );
    let video = streams.iter().find(|s| s.0 == "video").expect("video");
    assert!(video.2 >= 100, "decoded frames: {streams:?}");
    assert!(duration >= 3.5, "duration {duration}");
    stack.stop().await;
}
