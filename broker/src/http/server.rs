//! A small HTTP/1.1 server (hyper) for the endpoints and the console.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use super::{console, health, metrics, Endpoint};
use crate::start_error::{bind_endpoint, BindError, Listener};

/// Binds the endpoint's port now (so that a taken port fails start-up) and
/// returns the listener to hand to `serve` on the I/O runtime.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    bind_endpoint(Listener::Metrics, addr)
}

/// Accepts connections forever; spawn on the I/O runtime.
pub async fn serve(listener: std::net::TcpListener, ep: Arc<Endpoint>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "metrics endpoint cannot start");
            return;
        }
    };
    let console = console::Console::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "metrics endpoint accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let (ep, console) = (ep.clone(), console.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (ep, console) = (ep.clone(), console.clone());
                async move {
                    if console::owns(req.uri().path()) {
                        return Ok::<_, Infallible>(console::route(&ep, &console, req).await);
                    }
                    Ok(route(&ep, req).await.map(BodyExt::boxed_unsync))
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

const PLAIN: &str = "text/plain; charset=utf-8";

async fn route(ep: &Endpoint, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), PLAIN);
    }
    match req.uri().path() {
        "/healthz" => match health::liveness(ep).await {
            Ok(live) => text(StatusCode::OK, live.to_string(), PLAIN),
            Err(not_live) => text(StatusCode::SERVICE_UNAVAILABLE, not_live.to_string(), PLAIN),
        },
        "/readyz" => match health::readiness(ep).await {
            Ok(()) => text(StatusCode::OK, "ready\n".into(), PLAIN),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), PLAIN),
        },
        "/metrics" => match ep.metrics_text().await {
            Ok(body) => text(StatusCode::OK, body, metrics::CONTENT_TYPE),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), PLAIN),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), PLAIN),
    }
}
