//! A run: check the URL, start the collector, let the viewers join over the ramp, print
//! progress, measure the tool's own timer lateness, and write the summary and the report.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use livecast_media::master::MasterPlaylist;
use livecast_media::playlist::MediaPlaylist;
use livecast_telemetry::CancellationToken;

use std::path::Path;

use crate::collect::{collect, histogram, read_log, totals, write_log, Hists, Intervals, Sinks};
use crate::config::{MergeArgs, RunArgs, ThresholdArgs};
use crate::metrics::Live;
use crate::report::{Summary, Tally, Thresholds};
use crate::scenario::Scenario;
use crate::stats::Recorder;
use crate::viewer::{Outlet, Plan, Viewer};

/// Runs the audience `args` describes; writes `<out>/summary.json`, `<out>/report.html` and
/// `<out>/histograms.hlog`, and returns the summary. Cancelling `stop` ends the run early
/// (every viewer leaves at once, requests in flight are dropped, not counted) and the summary
/// covers the run up to then, marked `stopped_early`.
pub async fn run(args: &RunArgs, stop: CancellationToken) -> anyhow::Result<Summary> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => {
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
            Scenario::simple(args.viewers, args.ramp)
        }
    };
    if !(1.0..=2.0).contains(&args.max_live_sync_rate) {
        bail!("--max-live-sync-rate must be between 1 and 2 (hls.js caps it at 2)");
    }
    let audience = scenario.plan(&args.url, args.variant, args.duration)?;
    let shard_index = args.shard.resolve().await?;
    let mut plans = Vec::with_capacity(audience.kinds.len());
    for kind in &audience.kinds {
        plans.push(Plan {
            url: kind.url.clone(),
            master: preflight(&kind.url).await?,
            variant: kind.variant,
            low_latency: kind.low_latency,
            max_live_sync_rate: args.max_live_sync_rate,
            download_twice: args.download_twice,
        });
    }
    // Shards of one run write side by side: `<out>/shard-<I>`, for `merge <out>/shard-*`.
    let out = if args.shard.count > 1 {
        args.out.join(format!("shard-{shard_index}"))
    } else {
        args.out.clone()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // Shards wait for the common start; one that starts late keeps the common schedule.
    let base = args.start_at.unwrap_or_else(SystemTime::now);
    if let Ok(wait) = base.duration_since(SystemTime::now()) {
        tracing::info!(wait_secs = wait.as_secs_f64(), "waiting for --start-at");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => bail!("stopped while waiting for --start-at"),
        }
    }
    let late = SystemTime::now().duration_since(base).unwrap_or_default();
    let duration = audience.duration;
    if late >= duration {
        bail!("--start-at is {late:?} ago, longer than --duration: the run is already over");
    }
    let live = Arc::new(Live::default());
    let admin_stop = livecast_telemetry::CancellationToken::new();
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
        let health = livecast_telemetry::Health::default();
        health.set_ready(true);
        tokio::spawn(livecast_telemetry::serve_admin(
            listener,
            live.registry.clone(),
            health,
            admin_stop.clone(),
        ));
    }
    if let Some(url) = &args.viewers_url {
        tokio::spawn(poll_shipper(url.clone(), live.clone(), admin_stop.clone()));
    }
    let _stop_admin = admin_stop.drop_guard();
    let started = Instant::now()
        .checked_sub(late)
        .unwrap_or_else(Instant::now);
    let started_wall = base;
    let until = started + duration;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::new(tx, started);
    let collector = tokio::spawn(collect(
        rx,
        live.clone(),
        Sinks {
            hlog: out.join("histograms.hlog"),
            requests_out: args.requests_out.clone(),
            base: started_wall,
            offset_secs: late.as_secs(),
        },
    ));
    let lateness = tokio::spawn(timer_lateness(until, stop.clone()));
    let progress = (args.progress_secs > 0).then(|| {
        tokio::spawn(progress(
            live.clone(),
            Duration::from_secs(args.progress_secs),
            until,
            stop.clone(),
        ))
    });
    let seed = started_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let (index, count) = (shard_index, args.shard.count);
    let mut tasks = Vec::with_capacity(audience.slots.len() / count + 1);
    for (i, slot) in audience.slots.iter().enumerate() {
        if i % count != index {
            continue;
        }
        let join_at = started + slot.join;
        let leave_at = (started + slot.leave).min(until);
        let out = Outlet {
            live: live.clone(),
            recorder: recorder.clone(),
            stop: stop.clone(),
        };
        let viewer = Viewer::new(i as u32, session_id(seed, i as u128), out);
        let plan = plans[slot.kind].clone();
        let live = live.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // A viewer that had not joined when the run was stopped is not in the summary.
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(join_at)) => {}
                () = stop.cancelled() => return None,
            }
            live.viewers.inc();
            let stats = viewer.watch(plan, leave_at).await;
            live.viewers.dec();
            Some(stats)
        }));
    }
    drop(recorder);
    let mut tally = Tally {
        url: args.url.clone(),
        ..Tally::default()
    };
    for task in tasks {
        if let Some(stats) = task.await.context("a viewer task failed")? {
            tally.add_viewer(&stats);
        }
    }
    tally.stopped_early = stop.is_cancelled();
    if let Some(progress) = progress {
        progress.abort();
    }
    tally.timer_lateness_p99_ms = lateness.await.unwrap_or(0.0);
    tally.duration_secs = started.elapsed().as_secs_f64();
    let collected = collector.await.context("the collector failed")??;
    tally.counts = collected.counts;
    write_outputs(&out, tally, &collected.hists, args.thresholds)
}

/// Builds the summary and writes `summary.json` and `report.html` into `out`.
fn write_outputs(
    out: &Path,
    tally: Tally,
    hists: &Hists,
    thresholds: ThresholdArgs,
) -> anyhow::Result<Summary> {
    let thresholds = Thresholds {
        max_stall_ratio: thresholds.max_stall_ratio,
        max_error_rate: thresholds.max_error_rate,
    };
    let summary = Summary::build(tally, hists, thresholds);
    crate::html::write(out, &summary, hists)?;
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "{}\nsummary: {}\nreport: {}",
        summary.text(),
        path.display(),
        out.join("report.html").display()
    );
    Ok(summary)
}

/// Merges the output directories of shards into `args.out`: their tallies added, their
/// histogram logs added interval by interval (so percentiles are those of the whole
/// audience, not averages of percentiles).
pub async fn merge(args: &MergeArgs) -> anyhow::Result<Summary> {
    let mut tally = Tally::default();
    let mut intervals = Intervals::new();
    for dir in &args.dirs {
        let path = dir.join("summary.json");
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let summary: Summary = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a livecast-loadtest summary", path.display()))?;
        tally.add(&summary.tally);
        for ((t, tag), h) in read_log(&dir.join("histograms.hlog"))? {
            let _ = intervals.entry((t, tag)).or_insert_with(histogram).add(&h);
        }
    }
    // The time series' latency percentiles, from the added interval histograms.
    for sample in &mut tally.counts.series {
        let h = intervals.get(&(sample.t, "latency".to_string()));
        let q = |q: f64| {
            h.filter(|h| !h.is_empty())
                .map(|h| h.value_at_quantile(q) as f64 / 1e6)
        };
        sample.latency_p50 = q(0.5);
        sample.latency_p99 = q(0.99);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let hists = totals(&intervals);
    write_log(&args.out.join("histograms.hlog"), &intervals)?;
    write_outputs(&args.out, tally, &hists, args.thresholds)
}

/// One request before the audience joins, so bad input fails clearly instead of as a flood
/// of errors. Says whether `url` is a master playlist.
async fn preflight(url: &str) -> anyhow::Result<bool> {
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
    if MasterPlaylist::is_master(&text) {
        MasterPlaylist::parse(&text)
            .map_err(|e| anyhow::anyhow!("{url} is a master playlist that cannot be read: {e}"))?;
        return Ok(true);
    }
    MediaPlaylist::parse(&text).map_err(|e| {
        anyhow::anyhow!("{url} is not a media playlist livecast-loadtest understands: {e}")
    })?;
    Ok(false)
}

/// Polls the shipper's metrics every second for its concurrent-viewer count (the sum of
/// `livecast_viewers_concurrent` over streams) until `stop`.
async fn poll_shipper(url: String, live: Arc<Live>, stop: livecast_telemetry::CancellationToken) {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let Ok(uri) = url.parse::<http::Uri>() else {
        tracing::warn!(%url, "--viewers-url is not a URL");
        return;
    };
    while !stop.is_cancelled() {
        let fetched = async {
            let response = tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone()))
                .await
                .ok()?
                .ok()?;
            response
                .into_body()
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes())
        }
        .await;
        match fetched.and_then(|body| shipper_count(&String::from_utf8_lossy(&body))) {
            Some(n) => live.shipper_viewers.set(n as i64),
            None => live.shipper_viewers.set(-1),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The sum of `livecast_viewers_concurrent` samples in Prometheus text; `None` without any.
fn shipper_count(text: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("livecast_viewers_concurrent") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0) += v as u64;
        }
    }
    found
}

/// Each viewer's session cookie, distinct within a run and across runs.
fn session_id(seed: u128, i: u128) -> u128 {
    let mut x = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 67;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93_2a5b_7e0d_4f3a_9c1b);
    x ^ (x >> 59)
}

/// The p99 of how late a 10 ms sleep wakes, in milliseconds, until `until`.
async fn timer_lateness(until: Instant, stop: CancellationToken) -> f64 {
    let mut late = histogram();
    while Instant::now() < until && !stop.is_cancelled() {
        let asked = Instant::now() + Duration::from_millis(10);
        tokio::time::sleep_until(tokio::time::Instant::from_std(asked)).await;
        let micros = Instant::now().saturating_duration_since(asked).as_micros() as u64;
        late.saturating_record(micros.max(1));
    }
    late.value_at_quantile(0.99) as f64 / 1000.0
}

/// Progress every `every` on stderr: viewers, requests/s, Mb/s, stalls, errors. A bar that
/// redraws itself on a terminal, a line each time otherwise (logs, CI).
async fn progress(live: Arc<Live>, every: Duration, until: Instant, stop: CancellationToken) {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let total = until.saturating_duration_since(started).as_secs();
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let (mut requests, mut bytes) = (0, 0);
    while Instant::now() < until && !stop.is_cancelled() {
        tokio::time::sleep(every).await;
        let r = live.requests.get();
        let b = live.bytes.get();
        let line = format!(
            "viewers {:>6}  req/s {:>8.1}  Mb/s {:>8.2}  stalls {:>5}  errors {:>5}",
            live.viewers.get() as u64,
            (r - requests) as f64 / every.as_secs_f64(),
            (b - bytes) as f64 * 8.0 / 1e6 / every.as_secs_f64(),
            live.stalls.get(),
            live.errors.get(),
        );
        match &bar {
            Some(bar) => {
                bar.set_position(started.elapsed().as_secs());
                bar.set_message(line);
            }
            None => eprintln!("[{:>5.0} s] {line}", started.elapsed().as_secs_f64()),
        }
        (requests, bytes) = (r, b);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shippers_count_is_the_sum_over_streams() {
        let text = "# HELP livecast_viewers_concurrent x\n# TYPE livecast_viewers_concurrent gauge\n\
            livecast_viewers_concurrent{stream=\"a\"} 3\nlivecast_viewers_concurrent{stream=\"b\"} 2\n\
            livecast_viewers_concurrent_other 9\n";
        assert_eq!(super::shipper_count(text), Some(5));
        assert_eq!(super::shipper_count("up 1\n"), None);
    }

    #[test]
    fn sessions_differ() {
        let ids: std::collections::HashSet<u128> =
            (0..1000).map(|i| super::session_id(42, i)).collect();
        assert_eq!(ids.len(), 1000);
    }
}
