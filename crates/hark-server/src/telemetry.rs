//! What a node is doing, as Prometheus metrics served on their own listener
//! (`metrics_bind`): requests by route and status, authentication failures by kind,
//! key-cache hits and misses, revocation propagation lag, the job queue, inference
//! time, live sessions, and Redis and database errors. Recorded through the `metrics`
//! facade, so recording costs little when no exporter is installed.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// The process's exporter, installed once (several servers in one test process share it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&seconds)
                .map_err(|e| tracing::warn!(error = %e, "metrics buckets"))
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "hark_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "hark_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request handling time by route"
    );
    describe_counter!(
        "hark_auth_failures_total",
        "Refused API-key authentications by kind"
    );
    describe_counter!(
        "hark_key_cache_total",
        "API-key cache lookups by result (hit, miss, untrusted)"
    );
    describe_histogram!(
        "hark_revocation_lag_seconds",
        Unit::Seconds,
        "From a credential change's commit to this node hearing it"
    );
    describe_gauge!(
        "hark_revocation_bus_connected",
        "1 while this node hears every credential change"
    );
    describe_gauge!(
        "hark_jobs_queued",
        "Transcription jobs waiting to run (whole cluster)"
    );
    describe_histogram!(
        "hark_job_wait_seconds",
        Unit::Seconds,
        "From a job's creation to a worker claiming it"
    );
    describe_histogram!(
        "hark_inference_seconds",
        Unit::Seconds,
        "Speech engine time per transcription"
    );
    describe_gauge!("hark_live_sessions", "Live /v3/ws sessions on this node");
    describe_counter!("hark_redis_errors_total", "Failed Redis rate-limit checks");
    describe_gauge!(
        "hark_rate_limit_degraded",
        "1 while Redis is unreachable and the rate limit is per node"
    );
    describe_counter!(
        "hark_database_errors_total",
        "Database errors seen by requests and workers"
    );
}

/// Counts and times every request by its route template (never the raw path, which can
/// hold ids), method and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hark_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("hark_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

pub fn auth_failure(kind: &'static str) {
    metrics::counter!("hark_auth_failures_total", "kind" => kind).increment(1);
}

pub fn key_cache(result: &'static str) {
    metrics::counter!("hark_key_cache_total", "result" => result).increment(1);
}

pub fn revocation_lag(lag: Duration) {
    metrics::histogram!("hark_revocation_lag_seconds").record(lag.as_secs_f64());
}

pub fn bus_connected(up: bool) {
    metrics::gauge!("hark_revocation_bus_connected").set(if up { 1.0 } else { 0.0 });
}

pub fn jobs_queued(n: i64) {
    metrics::gauge!("hark_jobs_queued").set(n as f64);
}

pub fn job_wait(wait: Duration) {
    metrics::histogram!("hark_job_wait_seconds").record(wait.as_secs_f64());
}

pub fn inference(took: Duration) {
    metrics::histogram!("hark_inference_seconds").record(took.as_secs_f64());
}

pub fn live_sessions(n: usize) {
    metrics::gauge!("hark_live_sessions").set(n as f64);
}

pub fn redis_error() {
    metrics::counter!("hark_redis_errors_total").increment(1);
}

pub fn rate_limit_degraded(degraded: bool) {
    metrics::gauge!("hark_rate_limit_degraded").set(if degraded { 1.0 } else { 0.0 });
}

pub fn database_error() {
    metrics::counter!("hark_database_errors_total").increment(1);
}
