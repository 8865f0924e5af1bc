//! The read-only console at `/ui/` on the HTTP port: a static page (HTML, CSS and
//! vanilla JS compiled into the binary, so the broker needs no files beside it),
//! `/ui/api/state` (the state as JSON) and `/ui/events` (server-sent events: the
//! same JSON every second, with live rates from the counters' differences).

pub mod rates;
pub mod state;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use super::{Endpoint, ShardsError};
use state::StoreHealth;

/// The body type of console responses: whole documents and the endless SSE stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often `/ui/events` pushes the state.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("../../../ui/index.html");
const APP_JS: &str = include_str!("../../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../../ui/style.css");
const FAVICON_SVG: &str = include_str!("../../../ui/favicon.svg");

/// Only our own files: the page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// State shared by the console's requests.
pub struct Console {
    started: Instant,
    rates: rates::Tracker,
}

impl Console {
    /// Created when the HTTP endpoint starts, at broker start-up; uptime counts from here.
    pub fn new() -> Arc<Self> {
        Arc::new(Console {
            started: Instant::now(),
            rates: rates::Tracker::default(),
        })
    }

    /// The current state. The object store's health combines the readiness probe
    /// and the rating of its requests (`segstore::health`).
    pub async fn state(&self, ep: &Endpoint) -> Result<state::State, ShardsError> {
        let health = StoreHealth::new(ep.store_probe(), &ep.stats.health.snapshot());
        state::gather(ep, health, &self.rates, self.started.elapsed()).await
    }
}

/// Whether `path` is the console's to answer.
pub fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const JSON: &str = "application/json";
const PLAIN: &str = "text/plain; charset=utf-8";

fn json_error(why: &str) -> String {
    serde_json::json!({ "error": why }).to_string()
}

pub async fn route<B>(
    ep: &Arc<Endpoint>,
    console: &Arc<Console>,
    req: Request<B>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return full(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n");
    }
    match req.uri().path() {
        // The page's URLs are relative, so it must be served from the directory.
        "/ui" => {
            let mut r = full(StatusCode::MOVED_PERMANENTLY, PLAIN, "see /ui/\n");
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            r
        }
        "/ui/" | "/ui/index.html" => {
            let mut r = full(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML);
            r.headers_mut()
                .insert("content-security-policy", HeaderValue::from_static(CSP));
            no_store(r)
        }
        "/ui/app.js" => no_store(full(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            APP_JS,
        )),
        "/ui/style.css" => no_store(full(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS)),
        "/ui/favicon.svg" => full(StatusCode::OK, "image/svg+xml", FAVICON_SVG),
        "/ui/api/state" => no_store(match console.state(ep).await {
            Ok(s) => match serde_json::to_string(&s) {
                Ok(body) => full(StatusCode::OK, JSON, body),
                Err(e) => full(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    JSON,
                    json_error(&e.to_string()),
                ),
            },
            Err(why) => full(
                StatusCode::SERVICE_UNAVAILABLE,
                JSON,
                json_error(&why.to_string()),
            ),
        }),
        "/ui/events" => events(ep.clone(), console.clone()),
        _ => full(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

/// One SSE event: `state` with the state, or `unavailable` saying why there is none
/// (not `error`, which browsers use for the connection's own failures).
async fn event(ep: &Endpoint, console: &Console) -> Bytes {
    let text = match console.state(ep).await {
        Ok(s) => serde_json::to_string(&s)
            .map(|j| format!("event: state\ndata: {j}\n\n"))
            .unwrap_or_else(|e| {
                format!(
                    "event: unavailable\ndata: {}\n\n",
                    json_error(&e.to_string())
                )
            }),
        Err(why) => format!(
            "event: unavailable\ndata: {}\n\n",
            json_error(&why.to_string())
        ),
    };
    Bytes::from(text)
}

/// The SSE stream: an event at once, then one per `EVENT_INTERVAL`, until the
/// client goes away (hyper then drops the stream, which ends the loop).
fn events(ep: Arc<Endpoint>, console: Arc<Console>) -> Response<Body> {
    let mut ticker = tokio::time::interval(EVENT_INTERVAL);
    // A slow gathering delays the next event; it does not cause a burst after it.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold(
        (ep, console, ticker),
        |(ep, console, mut ticker)| async move {
            ticker.tick().await;
            let frame = Frame::data(event(&ep, &console).await);
            Some((Ok::<_, Infallible>(frame), (ep, console, ticker)))
        },
    );
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
