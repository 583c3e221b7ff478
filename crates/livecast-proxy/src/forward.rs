//! The forwarding policy, the same for both servers (the plain HTTP/1.1 loop and hyper's side):
//! what the balancer does with a request ([`Forwarder::decide`]: admission, the playback
//! guard, its own answers), and how a request goes to a front-end ([`Forwarder::fetch`] with
//! its single retry on another backend, [`Forwarder::forward_once`] for other methods), with
//! passive health feedback to the pool. The servers turn requests and answers into their own
//! wire forms around it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use livecast_telemetry::Cidr;

use crate::client::hyper::UpstreamError;
use crate::client::inline::{self, Answer, RawError};
use crate::client::{Body, Upstreams};
use crate::issue::Issuer;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::playback::{Pass, Playback, Refused};
use crate::pool::{Backend, Lease, Pool};

/// Who may watch and how often.
#[derive(Debug)]
pub(crate) struct Admission {
    pub allow: Vec<Cidr>,
    pub trusted_proxies: Vec<Cidr>,
    pub rate: Option<RateLimiter>,
    /// Signed playback URLs, when a secret is configured.
    pub playback: Option<Arc<Playback>>,
    /// `/api/token`, when a secret is configured.
    pub issuer: Option<Arc<Issuer>>,
}

/// The path where the player page gets its playback token.
pub(crate) const TOKEN_PATH: &str = "/api/token";

/// What the balancer does with a request, whichever server read it.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer this text (a refusal, or an answer of its own that is unavailable).
    Text(StatusCode, &'static str),
    /// Answer this JSON of its own (the viewer count).
    Json(Bytes),
    /// Issue a playback token (`/api/token`).
    Issue(Arc<Issuer>),
    /// Send it to a front-end, with the playback guard's pass if the path is guarded.
    Forward(Option<Pass>),
}

/// Forwards requests to the backends.
#[derive(Debug)]
pub(crate) struct Forwarder {
    connect_timeout: Duration,
    pool: Arc<Pool>,
    metrics: Metrics,
    admission: Arc<Admission>,
    /// Request ids: a random prefix per worker and a counter.
    id_prefix: u64,
    id_counter: std::sync::atomic::AtomicU64,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
}

impl Forwarder {
    pub fn new(
        pool: Arc<Pool>,
        metrics: Metrics,
        admission: Arc<Admission>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            connect_timeout,
            pool,
            metrics,
            admission,
            id_prefix: livecast_telemetry::RandomIds::new().next_u64(),
            id_counter: std::sync::atomic::AtomicU64::new(0),
            viewers: None,
        }
    }

    /// Serves `/api/viewers` from this feed.
    pub fn with_viewers(mut self, feed: Option<Arc<crate::viewers::ViewerFeed>>) -> Self {
        self.viewers = feed;
        self
    }

    /// A new request id: 16 hex digits of the worker's prefix and 8 of a counter, without a
    /// formatter on the hot path.
    pub fn request_id(&self) -> [u8; 24] {
        let n = self
            .id_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 24];
        for (i, digit) in id.iter_mut().enumerate() {
            let nibble = if i < 16 {
                self.id_prefix >> (60 - 4 * i)
            } else {
                n >> (28 - 4 * (i - 16))
            };
            *digit = HEX[(nibble & 0xf) as usize];
        }
        id
    }

    /// Whether `peer` is a proxy whose forwarding headers are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        livecast_telemetry::any_contains(&self.admission.trusted_proxies, peer)
    }

    /// What to do with a request from `client` for `path`, given the playback guard's verdict
    /// on it ([`Forwarder::check_playback`]): admission (the allow list, then the rate limit),
    /// `/api/token`, the guard's refusal, the balancer's own answers, in this order. Every
    /// refusal is counted.
    pub fn decide(
        &self,
        client: IpAddr,
        path: &str,
        playback: Result<Option<Pass>, Refused>,
    ) -> Decision {
        if let Err((status, text)) = self.admit(client) {
            return Decision::Text(status, text);
        }
        if let (Some(issuer), TOKEN_PATH) = (&self.admission.issuer, path) {
            return Decision::Issue(issuer.clone());
        }
        let pass = match playback {
            Ok(pass) => pass,
            Err(refused) => {
                let (status, text) = self.refuse_playback(refused);
                return Decision::Text(status, text);
            }
        };
        match self.own_answer(path) {
            Some(Ok(json)) => Decision::Json(json),
            Some(Err((status, text))) => Decision::Text(status, text),
            None => Decision::Forward(pass),
        }
    }

    /// Admission of a viewer at `client`: the allow list, then the rate limit. A refusal is
    /// counted and comes with the answer to give.
    fn admit(&self, client: IpAddr) -> Result<(), (StatusCode, &'static str)> {
        if !livecast_telemetry::any_contains(&self.admission.allow, client) {
            self.metrics
                .denied
                .with_label_values(&["not_allowed"])
                .inc();
            return Err((
                StatusCode::FORBIDDEN,
                "this stream is only available inside the company network\n",
            ));
        }
        if let Some(limiter) = &self.admission.rate {
            if !limiter.allow(client) {
                self.metrics
                    .denied
                    .with_label_values(&["rate_limited"])
                    .inc();
                return Err((StatusCode::TOO_MANY_REQUESTS, "too many requests\n"));
            }
        }
        Ok(())
    }

    /// The playback guard's verdict on a request (`Ok(None)`: no guard, or a path it does
    /// not guard); nothing is counted until [`Forwarder::decide`] acts on it.
    pub fn check_playback<'a>(
        &self,
        path: &str,
        query: Option<&str>,
        cookies: impl Iterator<Item = &'a [u8]>,
        client: IpAddr,
    ) -> Result<Option<Pass>, Refused> {
        match &self.admission.playback {
            Some(guard) => guard.admit(path, query, cookies, client),
            None => Ok(None),
        }
    }

    /// Counts a playback refusal and gives the answer for it.
    fn refuse_playback(&self, refused: Refused) -> (StatusCode, &'static str) {
        self.metrics
            .denied
            .with_label_values(&[refused.reason()])
            .inc();
        let text = match refused {
            Refused::Missing => "this stream needs a playback token\n",
            Refused::Invalid => "this playback token is not valid for this stream\n",
            Refused::Expired => "this playback token has expired\n",
        };
        (StatusCode::FORBIDDEN, text)
    }

    /// Whether `/api/token` is the balancer's to answer.
    pub fn issues_tokens(&self) -> bool {
        self.admission.issuer.is_some()
    }

    /// The balancer's own answer for `path`, if it has one: `Some(Ok(json))` for the viewer
    /// count, `Some(Err(..))` while the count is unavailable.
    fn own_answer(&self, path: &str) -> Option<Result<Bytes, (StatusCode, &'static str)>> {
        let feed = self.viewers.as_ref().filter(|_| path == "/api/viewers")?;
        Some(feed.latest().ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
            "viewer count unavailable\n",
        )))
    }

    /// Sends a GET or HEAD request `head` to a healthy backend and reads its answer's head,
    /// retrying once on another backend when the first cannot be reached or answers 502/503.
    /// Without an answer to pass on, says what to answer instead.
    pub async fn fetch(
        &self,
        upstreams: &Upstreams,
        method: &Method,
        head: &[u8],
    ) -> Result<(Answer, Lease), (StatusCode, &'static str)> {
        let held = is_held(head.split(|b| *b == b'\n').next().unwrap_or_default());
        let mut exclude = None;
        for attempt in 0..2 {
            let Some(lease) = self.pool.pick(exclude) else {
                break;
            };
            let backend = lease.backend.clone();
            exclude = Some(backend.addr);
            let sent = Instant::now();
            let last_try = attempt == 1;
            let send = inline::send(
                &upstreams.worker,
                backend.addr,
                self.connect_timeout,
                head,
                method,
            );
            // A front-end that stops answering (a dead link holds the request without closing
            // it) is ejected by its health checks; a request waiting on it then goes to
            // another, unless it already is the second try.
            let outcome = if last_try {
                send.await
            } else {
                let ejected = backend.ejection();
                tokio::select! {
                    biased;
                    outcome = send => outcome,
                    () = ejected => Err(RawError::Ejected),
                }
            };
            match outcome {
                Ok(answer) => {
                    if self.answered(&backend, sent, held, answer.status(), !last_try) {
                        continue;
                    }
                    return Ok((answer, lease));
                }
                Err(error) => {
                    let connect = matches!(error, RawError::Connect(_));
                    self.failed(&backend, sent, connect, &error);
                    // No byte has reached the viewer yet. A GET or HEAD may go to another
                    // front-end whatever failed (a front-end dying resets the connections it
                    // had queued).
                    if last_try {
                        break;
                    }
                    self.metrics.retries.inc();
                }
            }
        }
        Err(self.unanswered(exclude.is_some()))
    }

    /// Sends any other request (its body streamed through, so exactly one attempt) to a
    /// healthy backend.
    pub async fn forward_once(
        &self,
        upstreams: &Upstreams,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), (StatusCode, &'static str)> {
        let Some(lease) = self.pool.pick(None) else {
            return Err(self.unanswered(false));
        };
        let backend = lease.backend.clone();
        let held = request
            .uri()
            .path_and_query()
            .is_some_and(|pq| is_held(pq.as_str().as_bytes()));
        let sent = Instant::now();
        match upstreams
            .other
            .send(backend.addr, self.connect_timeout, request)
            .await
        {
            Ok(response) => {
                self.answered(&backend, sent, held, response.status(), false);
                Ok((response, lease))
            }
            Err(error) => {
                let connect = matches!(error, UpstreamError::Connect(_));
                self.failed(&backend, sent, connect, &error);
                Err(self.unanswered(true))
            }
        }
    }

    /// Records an answer from `backend`; says whether to try another backend instead (a
    /// 502/503 when `may_retry`: nothing of it has reached the viewer yet).
    fn answered(
        &self,
        backend: &Backend,
        sent: Instant,
        held: bool,
        status: StatusCode,
        may_retry: bool,
    ) -> bool {
        let latency = sent.elapsed();
        let handles = backend.metrics(&self.metrics);
        handles.duration.observe(latency.as_secs_f64());
        let sample = (!held).then_some(latency);
        self.pool
            .observe(backend, sample, !status.is_server_error());
        if may_retry
            && (status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE)
        {
            self.metrics
                .upstream_errors
                .with_label_values(&[backend.label(), "unavailable"])
                .inc();
            self.metrics.retries.inc();
            return true;
        }
        let class = usize::from((status.as_u16() / 100).clamp(1, 5)) - 1;
        handles.by_class[class].inc();
        false
    }

    /// Records a request to `backend` that got no answer.
    fn failed(
        &self,
        backend: &Backend,
        sent: Instant,
        connect: bool,
        error: &dyn std::fmt::Display,
    ) {
        let kind = if connect { "connect" } else { "request" };
        self.metrics
            .upstream_errors
            .with_label_values(&[backend.label(), kind])
            .inc();
        self.pool.observe(backend, Some(sent.elapsed()), false);
        tracing::warn!(backend = %backend.addr, %error, "upstream request failed");
    }

    /// What to answer when no backend answered: 503 when none was in service, else 502.
    fn unanswered(&self, tried: bool) -> (StatusCode, &'static str) {
        if !tried {
            self.metrics.no_backend.inc();
            return (StatusCode::SERVICE_UNAVAILABLE, "no front-end available\n");
        }
        self.metrics
            .requests
            .with_label_values(&["none", "5xx"])
            .inc();
        (StatusCode::BAD_GATEWAY, "front-end unavailable\n")
    }
}

/// Whether a request (its request line or target) is one a front-end holds on purpose: an
/// LL-HLS blocking playlist reload (`_HLS_msn=`), answered when the next part exists.
pub(crate) fn is_held(target: &[u8]) -> bool {
    target.windows(9).any(|w| w == b"_HLS_msn=")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Policy, Thresholds};

    fn forwarder(allow: &str, viewers: bool) -> Forwarder {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let thresholds = Thresholds {
            healthy_after: 1,
            unhealthy_after: 1,
            eject_after_errors: 1,
        };
        let pool = Arc::new(Pool::new(Policy::P2c, thresholds, metrics.clone()));
        let admission = Arc::new(Admission {
            allow: vec![allow.parse().unwrap()],
            trusted_proxies: Vec::new(),
            rate: None,
            playback: None,
            issuer: None,
        });
        Forwarder::new(pool, metrics, admission, Duration::from_secs(1))
            .with_viewers(viewers.then(Default::default))
    }

    fn text(decision: Decision) -> Option<(u16, &'static str)> {
        match decision {
            Decision::Text(status, text) => Some((status.as_u16(), text)),
            _ => None,
        }
    }

    #[test]
    fn admission_comes_first_then_the_guard_then_own_answers() {
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        let f = forwarder("10.0.0.0/8", true);
        // Outside the allow list: refused whatever the guard or the path says.
        let refused = f.decide(outside, "/api/viewers", Err(Refused::Missing));
        assert_eq!(text(refused).map(|t| t.0), Some(403));
        let not_allowed = f.metrics.denied.with_label_values(&["not_allowed"]);
        assert_eq!(not_allowed.get(), 1);
        // Inside: the guard's refusal, counted under its own reason.
        let refused = f.decide(inside, "/hls/cam/index.m3u8", Err(Refused::Expired));
        assert_eq!(
            text(refused),
            Some((403, "this playback token has expired\n"))
        );
        assert_eq!(
            f.metrics.denied.with_label_values(&["token_expired"]).get(),
            1
        );
        // The viewer count before the shipper answered: unavailable, not forwarded.
        assert_eq!(
            text(f.decide(inside, "/api/viewers", Ok(None))).map(|t| t.0),
            Some(503)
        );
        // Anything else goes to a front-end.
        assert!(matches!(
            f.decide(inside, "/hls/cam/index.m3u8", Ok(None)),
            Decision::Forward(None)
        ));
        // Without a feed, /api/viewers is the front-ends' to answer.
        let f = forwarder("10.0.0.0/8", false);
        assert!(matches!(
            f.decide(inside, "/api/viewers", Ok(None)),
            Decision::Forward(None)
        ));
    }

    #[test]
    fn no_backend_is_503_and_counted() {
        let f = forwarder("0.0.0.0/0", false);
        let upstreams = Upstreams::default();
        let fetched = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f.fetch(&upstreams, &Method::GET, b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!(fetched.err().map(|e| e.0.as_u16()), Some(503));
        assert_eq!(f.metrics.no_backend.get(), 1);
    }
}
