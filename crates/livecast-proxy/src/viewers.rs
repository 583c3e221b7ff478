//! The viewer count for the player page. The shipper computes it from the access logs; the
//! balancer keeps a copy fresh (one request a second, whatever the audience) and answers
//! `/api/viewers` from memory. Front-ends and ingest are not involved, so the data flow stays
//! one-way.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use livecast_telemetry::CancellationToken;

use crate::client::control::ControlClient;

const REFRESH: Duration = Duration::from_secs(1);

/// The latest viewer report, if the shipper answered recently.
#[derive(Debug, Default)]
pub(crate) struct ViewerFeed {
    latest: RwLock<Option<Bytes>>,
}

impl ViewerFeed {
    pub fn latest(&self) -> Option<Bytes> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Fetches `url` every second until `shutdown`; a failed fetch clears the copy so the page
    /// never shows a stale count as current.
    pub async fn run(
        self: Arc<Self>,
        client: ControlClient,
        url: http::Uri,
        shutdown: CancellationToken,
    ) {
        loop {
            let fetched = client.body(url.clone(), REFRESH).await;
            if let Ok(mut latest) = self.latest.write() {
                *latest = fetched;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}
