//! The driver's ordering and checkpoint rules, against a scripted sink.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Driver, Round};
use crate::archive::Archive;
use crate::metrics::Metrics;
use crate::retry::Delivery;
use crate::sink::{Outcome, Sink};
use crate::source::{Line, Names, Source};
use crate::viewers::Viewers;

/// A sink that does what the test says, per line number (`{"n": N}`).
#[derive(Default)]
struct Scripted {
    /// A batch whose first line is N waits until its gate is opened.
    gates: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Lines whose next request fails as a whole (once each).
    fail_once: Mutex<HashSet<u64>>,
    /// Every request fails.
    always_fail: bool,
    /// Lines refused for good.
    reject: HashSet<u64>,
    /// The line numbers of every request, in the order they were made.
    calls: Mutex<Vec<Vec<u64>>>,
}

fn number(line: &Line) -> u64 {
    serde_json::from_slice::<serde_json::Value>(&line.bytes).unwrap()["n"]
        .as_u64()
        .unwrap()
}

impl Scripted {
    fn gate(&self, n: u64) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        self.gates.lock().unwrap().insert(n, gate.clone());
        gate
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Sink for Scripted {
    type Error = String;

    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn send(&self, lines: &[Line], which: &[usize]) -> Result<Outcome, String> {
        let numbers: Vec<u64> = which.iter().map(|i| number(&lines[*i])).collect();
        self.calls.lock().unwrap().push(numbers.clone());
        let gate = self.gates.lock().unwrap().get(&numbers[0]).cloned();
        if let Some(gate) = gate {
            gate.notified().await;
        }
        let failing = self.always_fail
            || numbers
                .iter()
                .any(|n| self.fail_once.lock().unwrap().remove(n));
        if failing {
            return Err("scripted failure".into());
        }
        let mut outcome = Outcome::default();
        for (i, n) in which.iter().zip(&numbers) {
            if self.reject.contains(n) {
                outcome.rejected.push((*i, "scripted refusal".into()));
            } else {
                outcome.delivered += 1;
            }
        }
        Ok(outcome)
    }
}

struct Rig {
    driver: Driver<Scripted>,
    sink: Arc<Scripted>,
    dir: tempfile::TempDir,
    total: u64,
}

/// A driver over one log of `lines` (one per batch) and `sink`.
fn rig(lines: &[&str], sink: Scripted) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut f = std::fs::File::create(logs.join("access.log")).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    let total = f.metadata().unwrap().len();
    let names = Names {
        include: vec!["*.log".into()],
        exclude: Vec::new(),
    };
    let source = Source::open(logs, names, dir.path()).unwrap();
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let sink = Arc::new(sink);
    let archive = Archive::open(
        &dir.path().join("archive").display().to_string(),
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut driver = Driver::new(
        source,
        Some(sink.clone()),
        None,
        Arc::new(Mutex::new(Viewers::new(Duration::from_secs(60)))),
        Delivery {
            metrics,
            dead_letter_path: dir.path().join("dead-letter.ndjson"),
        },
        Arc::new(Notify::new()),
        livecast_telemetry::CancellationToken::new(),
        archive,
    );
    driver.batch_lines = 1;
    driver.poll = Duration::from_millis(20);
    driver.drain = Duration::ZERO;
    Rig {
        driver,
        sink,
        dir,
        total,
    }
}

impl Rig {
    /// Bytes of the log not yet checkpointed, after a rescan.
    fn behind(&mut self) -> u64 {
        self.driver.source.scan().unwrap();
        self.driver.source.bytes_behind()
    }

    async fn rounds(&mut self, n: usize) {
        for _ in 0..n {
            assert_eq!(self.driver.round().await.unwrap(), Round::Continue);
        }
    }
}

#[tokio::test]
async fn checkpoints_move_in_read_order_whatever_order_the_sink_acknowledges_in() {
    let sink = Scripted::default();
    let first = sink.gate(0);
    let second = sink.gate(1);
    let mut rig = rig(&[r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#], sink);
    // Three batches on their way; the third is acknowledged at once.
    rig.rounds(3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.rounds(2).await;
    assert_eq!(rig.sink.calls(), vec![vec![0], vec![1], vec![2]]);
    assert_eq!(rig.behind(), rig.total, "nothing before the first batch");
    // The second is acknowledged: still nothing, the first is on its way.
    second.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    rig.rounds(2).await;
    assert_eq!(rig.behind(), rig.total);
    // The first is acknowledged: all three are checkpointed, in order.
    first.notify_one();
    rig.rounds(4).await;
    assert_eq!(rig.behind(), 0);
    let shipped = rig.driver.metrics.shipped.with_label_values(&["scripted"]);
    assert_eq!(shipped.get(), 3);
}

#[tokio::test]
async fn a_failed_request_is_sent_again_and_only_then_checkpointed() {
    let sink = Scripted::default();
    sink.fail_once.lock().unwrap().insert(0);
    let mut rig = rig(&[r#"{"n":0}"#], sink);
    rig.rounds(2).await;
    assert_eq!(rig.behind(), rig.total);
    // The retry comes after 100-200 ms of backoff.
    for _ in 0..20 {
        rig.rounds(1).await;
        if rig.behind() == 0 {
            break;
        }
    }
    assert_eq!(rig.behind(), 0);
    assert_eq!(rig.sink.calls(), vec![vec![0], vec![0]]);
    let metrics = &rig.driver.metrics;
    assert_eq!(metrics.failed.with_label_values(&["scripted"]).get(), 1);
    assert_eq!(metrics.shipped.with_label_values(&["scripted"]).get(), 1);
}

#[tokio::test]
async fn refused_and_malformed_lines_are_dead_lettered_and_the_log_moves_on() {
    let sink = Scripted {
        reject: [1].into(),
        ..Scripted::default()
    };
    let mut rig = rig(&[r#"{"n":0}"#, r#"{"n":1}"#, "not json"], sink);
    rig.rounds(6).await;
    assert_eq!(rig.behind(), 0);
    // The malformed line never reaches the sink.
    assert_eq!(rig.sink.calls(), vec![vec![0], vec![1]]);
    let dead = std::fs::read_to_string(rig.dir.path().join("dead-letter.ndjson")).unwrap();
    let mut records: Vec<(String, String)> = dead
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["sink"].to_string(), r["line"].to_string()))
        .collect();
    // The parse failure is written by the driver, the refusal by the delivery task: in
    // either order.
    records.sort();
    let expected = [("parse", "not json"), ("scripted", r#"{"n":1}"#)]
        .map(|(sink, line)| (format!("{sink:?}"), format!("{line:?}")));
    assert_eq!(records, expected, "{dead}");
}

#[tokio::test]
async fn at_shutdown_an_unacknowledged_batch_is_not_checkpointed() {
    let sink = Scripted {
        always_fail: true,
        ..Scripted::default()
    };
    let mut rig = rig(&[r#"{"n":0}"#, r#"{"n":1}"#], sink);
    rig.rounds(2).await;
    rig.driver.shutdown.cancel();
    assert_eq!(rig.driver.round().await.unwrap(), Round::Stop);
    // The drain deadline (zero here) ends the retries; nothing was acknowledged.
    tokio::time::timeout(Duration::from_secs(5), rig.driver.finish())
        .await
        .expect("the deliveries stop at the deadline");
    assert_eq!(rig.behind(), rig.total);
}
