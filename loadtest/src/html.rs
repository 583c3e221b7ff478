//! `report.html`: one self-contained file that opens offline (the chart library is embedded,
//! as the player page embeds hls.js): the verdict, the key numbers, and charts over time of
//! viewers, throughput, latency percentiles, stalls and errors, the startup-time and latency
//! distributions, and requests by front-end.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use crate::collect::Hists;
use crate::report::Summary;

const UPLOT_JS: &str = include_str!(env!("LIVECAST_UPLOT_JS"));
const UPLOT_CSS: &str = include_str!(env!("LIVECAST_UPLOT_CSS"));

/// Writes `<dir>/report.html`.
pub(crate) fn write(dir: &Path, summary: &Summary, hists: &Hists) -> anyhow::Result<()> {
    let path = dir.join("report.html");
    std::fs::write(&path, render(summary, hists))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Percentile curve of a histogram: (percentile, value in units of `per` microseconds).
fn curve(h: &Histogram<u64>, per: f64) -> (Vec<f64>, Vec<f64>) {
    if h.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let qs = [
        0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 97.5, 99.0,
        99.5, 99.9, 100.0,
    ];
    let values = qs
        .iter()
        .map(|q| h.value_at_quantile(q / 100.0) as f64 / per)
        .collect();
    (qs.to_vec(), values)
}

pub(crate) fn render(summary: &Summary, hists: &Hists) -> String {
    let series = &summary.tally.counts.series;
    let t0 = series.first().map_or(0, |s| s.t);
    let col = |f: &dyn Fn(&crate::collect::Sample) -> Option<f64>| -> Vec<Option<f64>> {
        series.iter().map(f).collect()
    };
    let data = serde_json::json!({
        "t": col(&|s| Some((s.t - t0) as f64)),
        "viewers": col(&|s| Some(s.viewers as f64)),
        "shipper": col(&|s| s.shipper_viewers.map(|v| v as f64)),
        "mbps": col(&|s| Some(s.bytes as f64 * 8.0 / 1e6)),
        "rps": col(&|s| Some(s.requests as f64)),
        "lat50": col(&|s| s.latency_p50),
        "lat99": col(&|s| s.latency_p99),
        "stalls": col(&|s| Some(s.stalls as f64)),
        "errors": col(&|s| Some(s.errors as f64)),
        "startup": curve(&hists.startup, 1000.0),
        "latency": curve(&hists.latency, 1e6),
    });
    // Inside <script>, "</" would end the element.
    let data = data.to_string().replace("</", "<\\/");
    let verdict = if summary.passed {
        "<span class=ok>passed</span>".to_string()
    } else {
        format!(
            "<span class=bad>FAILED</span>: {}",
            escape(&summary.failures.join("; "))
        )
    };
    let trust = if summary.honesty.trustworthy {
        "<span class=ok>trustworthy</span>"
    } else {
        "<span class=bad>not trustworthy</span> (the load tester's own timer was late: the machine was too busy)"
    };
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    let mut numbers = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(numbers, "<tr><th>{}</th><td>{}</td></tr>", escape(k), v);
    };
    row("viewers", summary.viewers.to_string());
    row("duration", format!("{:.0} s", summary.duration_secs));
    row(
        "startup (ms) p50 / p95",
        format!(
            "{} / {}",
            fmt(summary.startup_ms.p50),
            fmt(summary.startup_ms.p95)
        ),
    );
    row(
        "stalls",
        format!(
            "{} ({:.1} s; rebuffer ratio {:.4}); never started: {}",
            summary.stalls, summary.stalled_secs, summary.rebuffer_ratio, summary.never_started
        ),
    );
    row(
        "live latency (s) p50 / p95 / p99",
        format!(
            "{} / {} / {}",
            fmt(summary.latency_secs.p50),
            fmt(summary.latency_secs.p95),
            fmt(summary.latency_secs.p99)
        ),
    );
    row(
        "errors",
        format!(
            "{} (rate {:.4})",
            escape(&format!("{:?}", summary.errors)),
            summary.error_rate
        ),
    );
    row("data", format!("{:.1} MB", summary.bytes as f64 / 1e6));
    row(
        "variant switches up / down",
        format!("{} / {}", summary.switches_up, summary.switches_down),
    );
    row(
        "honesty",
        format!(
            "download ratio {}, duplicates {}, skipped segments {}, timer lateness p99 {} ms: {trust}",
            summary.honesty.download_ratio,
            summary.honesty.duplicate_downloads,
            summary.honesty.skipped_segments,
            summary.honesty.timer_lateness_p99_ms
        ),
    );
    let mut requests = String::new();
    for (kind, r) in &summary.requests {
        let _ = writeln!(
            requests,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(kind),
            r.count,
            fmt(r.first_byte_ms.p50),
            fmt(r.first_byte_ms.p99),
            fmt(r.last_byte_ms.p50),
            fmt(r.last_byte_ms.p99)
        );
    }
    let total: u64 = summary.frontends.values().sum::<u64>().max(1);
    let mut frontends = String::new();
    for (name, n) in &summary.frontends {
        let share = *n as f64 / total as f64 * 100.0;
        let _ = writeln!(
            frontends,
            "<tr><th>{}</th><td>{n}</td><td><div class=bar style=\"width:{share:.1}%\"></div></td></tr>",
            escape(name)
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>livecast-loadtest report</title>
<style>{UPLOT_CSS}
body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}}
.ok{{color:#080;font-weight:bold}}.bad{{color:#b00;font-weight:bold}}
.bar{{background:#4a7;height:.8em;min-width:1px}}td:has(.bar){{width:300px}}
.charts{{display:grid;grid-template-columns:1fr 1fr;gap:1em}}.chart h3{{margin:.3em 0;font-size:14px}}
</style></head><body>
<h1>livecast-loadtest</h1>
<p>{url} — {verdict}</p>
<table>{numbers}</table>
<h2>Over time</h2>
<div class=charts>
<div class=chart id=viewers><h3>Viewers (and the log shipper's count, with --viewers-url)</h3></div>
<div class=chart id=throughput><h3>Throughput (Mb/s) and requests/s</h3></div>
<div class=chart id=latency><h3>Live latency (s), p50 and p99 each second</h3></div>
<div class=chart id=trouble><h3>Stalls and errors per second</h3></div>
</div>
<h2>Distributions</h2>
<div class=charts>
<div class=chart id=startup><h3>Startup time (ms) by percentile</h3></div>
<div class=chart id=latencydist><h3>Live latency (s) by percentile</h3></div>
</div>
<h2>Requests</h2>
<table><tr><th>type</th><th>count</th><th>first byte p50 ms</th><th>p99</th><th>last byte p50 ms</th><th>p99</th></tr>
{requests}</table>
<h2>Requests by front-end</h2>
<table>{frontends}</table>
<script>{UPLOT_JS}</script>
<script>
const d = {data};
function chart(id, x, ys, labels, opts) {{
  const el = document.getElementById(id);
  if (!x.length) {{ el.insertAdjacentHTML('beforeend', '<p>no data</p>'); return; }}
  const colors = ['#2a6', '#c50', '#36c', '#a3a'];
  new uPlot(Object.assign({{
    width: 520, height: 220,
    series: [{{label: opts && opts.xlabel || 's'}}].concat(labels.map((l, i) => ({{label: l, stroke: colors[i], width: 2}}))),
    scales: {{x: {{time: false}}}},
  }}, opts || {{}}), [x].concat(ys), el);
}}
if (d.shipper.some((v) => v !== null)) chart('viewers', d.t, [d.viewers, d.shipper], ['true count', 'shipper count']);
else chart('viewers', d.t, [d.viewers], ['viewers']);
chart('throughput', d.t, [d.mbps, d.rps], ['Mb/s', 'req/s']);
chart('latency', d.t, [d.lat50, d.lat99], ['p50', 'p99']);
chart('trouble', d.t, [d.stalls, d.errors], ['stalls', 'errors']);
chart('startup', d.startup[0], [d.startup[1]], ['ms'], {{xlabel: 'percentile'}});
chart('latencydist', d.latency[0], [d.latency[1]], ['s'], {{xlabel: 'percentile'}});
document.body.dataset.charts = document.querySelectorAll('canvas').length;
</script>
</body></html>
"#,
        url = escape(&summary.url),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
