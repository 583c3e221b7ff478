//! The service entry point: wiring the source, the sink and the driver, the admin server
//! (`/api/viewers`), the viewer gauges and the Zabbix report.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use livecast_telemetry::{serve_admin_with, CancellationToken, Health, Registry};
use notify::Watcher as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::driver::{Driver, Round, SpillStage};
use crate::elasticsearch::{authorization, Elasticsearch};
use crate::metrics::Metrics;
use crate::retry::Delivery;
use crate::source::Source;
use crate::spill::Spill;
use crate::viewers::{Counts, Viewers};
use crate::{Config, LogshipError};

/// The sockets the service serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Admin HTTP, with `/api/viewers`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }
}

#[derive(Clone)]
struct AdminState {
    viewers: Arc<Mutex<Viewers>>,
    window: u64,
}

#[derive(serde::Serialize)]
struct ViewerReport {
    window_secs: u64,
    streams: std::collections::BTreeMap<String, Counts>,
}

async fn viewer_report(State(state): State<AdminState>) -> Json<ViewerReport> {
    let counts = state
        .viewers
        .lock()
        .map(|mut v| v.counts(SystemTime::now()))
        .unwrap_or_default();
    Json(ViewerReport {
        window_secs: state.window,
        streams: counts.into_iter().collect(),
    })
}

/// Runs the shipper until `shutdown` is cancelled: it then stops reading, lets the batch in
/// flight finish within `--drain-secs`, and checkpoints what was acknowledged.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), LogshipError> {
    config.validate()?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let viewers = Arc::new(Mutex::new(Viewers::new(Duration::from_secs(
        config.viewer_window_secs,
    ))));
    let admin_routes = Router::new()
        .route("/api/viewers", get(viewer_report))
        .with_state(AdminState {
            viewers: viewers.clone(),
            window: config.viewer_window_secs,
        });
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(serve_admin_with(
        listeners.admin,
        registry,
        health.clone(),
        admin_routes,
        admin_stop.clone(),
    ));
    let sink = match config.elasticsearch() {
        Some(url) => Some(Arc::new(
            Elasticsearch::new(
                url,
                config.elasticsearch_index.clone(),
                authorization(
                    config.elasticsearch_user.as_deref(),
                    config.elasticsearch_password.as_deref(),
                    config.elasticsearch_api_key.as_deref(),
                ),
                config.elasticsearch_gzip,
                config.elasticsearch_template,
                config.elasticsearch_tls()?,
            )
            .map_err(LogshipError::Config)?,
        )),
        None => None,
    };
    let archive = crate::archive::Archive::open(
        &config.archive_target(),
        Duration::from_secs(config.archive_after_secs),
    )
    .map_err(LogshipError::Config)?;
    // The front-ends may start later; watching needs the directory to exist.
    std::fs::create_dir_all(&config.log_dir)?;
    let names = crate::source::Names {
        include: config.include.clone(),
        exclude: config.exclude.clone(),
    };
    let source = Source::open(config.log_dir.clone(), names, &config.state_dir)?;
    // Without a sink nothing waits, so nothing spills.
    let spill = match (&sink, config.spill_max_mb) {
        (Some(_), mb) if mb > 0 => Some(SpillStage::new(
            Spill::open(
                config.state_dir.join("spill"),
                mb.saturating_mul(1024 * 1024),
            )?,
            Duration::from_secs(config.spill_after_secs),
        )),
        _ => None,
    };
    let dead_letter_path = config.state_dir.join("dead-letter.ndjson");
    let wake = Arc::new(Notify::new());
    let _watcher = watch(&config.log_dir, wake.clone());
    tokio::spawn(export_viewers(
        viewers.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    if let Some(server) = config.zabbix() {
        let streams_url = match config.streams_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Some(url.parse::<http::Uri>().map_err(|_| {
                LogshipError::Config(format!("--streams-url is not a URL: {url:?}"))
            })?),
            None => None,
        };
        tokio::spawn(crate::zabbix::report(
            crate::zabbix::Target {
                server: server.to_string(),
                host: config.zabbix_host.clone(),
                prefix: config.zabbix_key_prefix.clone(),
                interval: Duration::from_secs(config.zabbix_interval_secs),
                discovery: config.zabbix_discovery,
                streams_url,
            },
            viewers.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    health.set_ready(true);
    tracing::info!(
        log_dir = %config.log_dir.display(),
        elasticsearch = config.elasticsearch().unwrap_or("(none: counting only)"),
        "logship running"
    );

    let delivery = Delivery {
        metrics,
        dead_letter_path,
    };
    let mut shipper = Driver::new(
        source,
        sink,
        spill,
        viewers,
        delivery,
        wake,
        shutdown.clone(),
        archive,
    );
    shipper.poll = Duration::from_millis(config.poll_interval_ms);
    shipper.drain = Duration::from_secs(config.drain_secs);
    shipper.batch_lines = config.batch_lines;
    while !shutdown.is_cancelled() {
        match shipper.round().await {
            Ok(Round::Continue) => {}
            Ok(Round::Stop) => break,
            Err(error) => {
                // A full disk or a vanished file is no reason to stop shipping: nothing was
                // checkpointed, so the next round starts from the same place.
                tracing::error!(%error, "shipping round failed; retrying");
                shipper.abandon_in_flight().await;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(shipper.poll) => {}
                }
            }
        }
    }
    shipper.finish().await;
    shipper.archive_closed().await;
    health.set_ready(false);
    admin_stop.cancel();
    admin
        .await
        .map_err(|e| LogshipError::Io(std::io::Error::other(e)))??;
    Ok(())
}

async fn export_viewers(
    viewers: Arc<Mutex<Viewers>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let counts = viewers
            .lock()
            .map(|mut v| v.counts(SystemTime::now()))
            .unwrap_or_default();
        for (stream, c) in counts {
            metrics
                .viewers
                .with_label_values(&[&stream])
                .set(c.concurrent as i64);
            metrics
                .viewers_peak
                .with_label_values(&[&stream])
                .set(c.peak as i64);
            metrics
                .viewers_unique
                .with_label_values(&[&stream])
                .set(c.unique as i64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// File-system events wake the loop at once; without them (network volumes) it polls.
fn watch(dir: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            wake.notify_one();
        }
    })
    .ok()?;
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(error) => {
            tracing::info!(%error, dir = %dir.display(), "no file-system events; polling");
            None
        }
    }
}
