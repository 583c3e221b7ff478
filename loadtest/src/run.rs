//! A run: check the URL, let the viewers join over the ramp, print progress, measure the
//! tool's own timer lateness, and write the summary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use livecast_media::playlist::MediaPlaylist;

use crate::config::RunArgs;
use crate::report::{Summary, Thresholds};
use crate::stats::{percentile, Live};
use crate::viewer::Viewer;

/// Runs the audience `args` describes; writes `<out>/summary.json` and returns the summary.
pub async fn run(args: &RunArgs) -> anyhow::Result<Summary> {
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    if args.ramp > args.duration {
        bail!(
            "--ramp ({:?}) is longer than --duration ({:?})",
            args.ramp,
            args.duration
        );
    }
    preflight(&args.url).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let live = Arc::new(Live::default());
    let started = Instant::now();
    let until = started + args.duration;
    let lateness = tokio::spawn(timer_lateness(until));
    let progress = (args.progress_secs > 0).then(|| {
        tokio::spawn(progress(
            live.clone(),
            Duration::from_secs(args.progress_secs),
            until,
        ))
    });
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut tasks = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        let join_at = started + args.ramp.mul_f64(i as f64 / args.viewers as f64);
        let viewer = Viewer::new(session_id(seed, i as u128), live.clone());
        let url = args.url.clone();
        let live = live.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(join_at)).await;
            live.viewers.fetch_add(1, Ordering::Relaxed);
            let stats = viewer.watch(url, until).await;
            live.viewers.fetch_sub(1, Ordering::Relaxed);
            stats
        }));
    }
    let mut viewers = Vec::with_capacity(tasks.len());
    for task in tasks {
        viewers.push(task.await.context("a viewer task failed")?);
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let lateness = lateness.await.unwrap_or(0.0);
    let thresholds = Thresholds {
        max_stall_ratio: args.max_stall_ratio,
        max_error_rate: args.max_error_rate,
    };
    let summary = Summary::build(
        &args.url,
        started.elapsed().as_secs_f64(),
        &viewers,
        lateness,
        thresholds,
    );
    let path = args.out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("{}\nsummary: {}", summary.text(), path.display());
    Ok(summary)
}

/// One request before the audience joins, so bad input fails clearly instead of as a flood
/// of errors.
async fn preflight(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url}: only http:// playlists can be played (for now)");
    }
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .with_context(|| format!("{url}: no answer within 10 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the playlist")?
        .to_bytes();
    if status == http::StatusCode::NOT_FOUND {
        bail!("{url} answered 404: no such stream (is it live? /api/streams lists the live ones)");
    }
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("#EXTM3U") {
        bail!("{url} is not an HLS playlist (it does not start with #EXTM3U)");
    }
    if text.contains("#EXT-X-STREAM-INF") {
        bail!("{url} is a master playlist; give one of its media playlists (variants come later)");
    }
    MediaPlaylist::parse(&text).map_err(|e| {
        anyhow::anyhow!("{url} is not a media playlist livecast-loadtest understands: {e:?}")
    })?;
    Ok(())
}

/// Each viewer's session cookie, distinct within a run and across runs.
fn session_id(seed: u128, i: u128) -> u128 {
    let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 67;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93_2a5b_7e0d_4f3a_9c1b);
    x ^ (x >> 59)
}

/// The p99 of how late a 10 ms sleep wakes, in milliseconds, until `until`.
async fn timer_lateness(until: Instant) -> f64 {
    let mut late = Vec::new();
    while Instant::now() < until {
        let asked = Instant::now() + Duration::from_millis(10);
        tokio::time::sleep_until(tokio::time::Instant::from_std(asked)).await;
        late.push(
            Instant::now()
                .saturating_duration_since(asked)
                .as_secs_f64()
                * 1000.0,
        );
    }
    percentile(&mut late, 99.0).unwrap_or(0.0)
}

/// A progress line every `every` on stderr: viewers, requests/s, Mb/s, stalls, errors.
async fn progress(live: Arc<Live>, every: Duration, until: Instant) {
    let (mut requests, mut bytes) = (0, 0);
    let started = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        let r = live.requests.load(Ordering::Relaxed);
        let b = live.bytes.load(Ordering::Relaxed);
        eprintln!(
            "[{:>5.0} s] viewers {:>6}  req/s {:>8.1}  Mb/s {:>8.2}  stalls {:>5}  errors {:>5}",
            started.elapsed().as_secs_f64(),
            live.viewers.load(Ordering::Relaxed),
            (r - requests) as f64 / every.as_secs_f64(),
            (b - bytes) as f64 * 8.0 / 1e6 / every.as_secs_f64(),
            live.stalls.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        );
        (requests, bytes) = (r, b);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sessions_differ() {
        let ids: std::collections::HashSet<u128> =
            (0..1000).map(|i| super::session_id(42, i)).collect();
        assert_eq!(ids.len(), 1000);
    }
}
