//! The agent's Prometheus metrics (prometheus-client), served as text on
//! `--metrics-bind-address`: what the plugin invocations reported through the spool,
//! and the health of the NAD watch.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub invocations: Family<Labels, Counter>,
    pub invocation_seconds: HistogramFamily,
    pub delegate_seconds: HistogramFamily,
    pub api_requests: Counter,
    pub api_errors: Counter,
    pub mirror_lookups: Family<Labels, Counter>,
    pub watch_healthy: Gauge,
    pub watch_restarts: Counter,
    pub mirrored_nads: Gauge,
    pub spool_records: Counter,
    pub spool_unreadable: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("multus");
        let invocations = Family::<Labels, Counter>::default();
        let invocation_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let delegate_seconds = HistogramFamily::new_with_constructor(latency_histogram);
        let (api_requests, api_errors, watch_restarts) = (Counter::default(), Counter::default(), Counter::default());
        let mirror_lookups = Family::<Labels, Counter>::default();
        let (watch_healthy, mirrored_nads) = (Gauge::default(), Gauge::default());
        let (spool_records, spool_unreadable) = (Counter::default(), Counter::default());
        registry.register(
            "invocations",
            "Plugin invocations by CNI verb and result code (0: success)",
            invocations.clone(),
        );
        registry.register("invocation_seconds", "Duration of plugin invocations by verb", invocation_seconds.clone());
        registry.register(
            "delegate_seconds",
            "Duration of delegate plugin executions by plugin type",
            delegate_seconds.clone(),
        );
        registry.register(
            "api_requests",
            "API requests made by plugin invocations (each attempt)",
            api_requests.clone(),
        );
        registry.register("api_errors", "API requests of plugin invocations that failed", api_errors.clone());
        registry.register(
            "nad_mirror_lookups",
            "NAD lookups of plugin invocations: hit (mirror), miss (API GET), fallback (stale mirror, API used)",
            mirror_lookups.clone(),
        );
        registry.register(
            "nad_mirror_watch_healthy",
            "1 while the NAD watch is synced and the heartbeat refreshed",
            watch_healthy.clone(),
        );
        registry.register(
            "nad_mirror_watch_restarts",
            "NAD watch errors (each followed by a resume or relist)",
            watch_restarts.clone(),
        );
        registry.register("nad_mirror_entries", "NADs in the mirror", mirrored_nads.clone());
        registry.register("spool_records", "Invocation records drained from the spool", spool_records.clone());
        registry.register(
            "spool_unreadable",
            "Spool files dropped unread (oversized, not a file, bad JSON)",
            spool_unreadable.clone(),
        );
        Metrics {
            registry,
            invocations,
            invocation_seconds,
            delegate_seconds,
            api_requests,
            api_errors,
            mirror_lookups,
            watch_healthy,
            watch_restarts,
            mirrored_nads,
            spool_records,
            spool_unreadable,
        }
    }

    /// Count one invocation record.
    pub fn observe(&self, r: &crate::spool::Record) {
        let verb = vec![("verb".to_string(), r.verb.clone())];
        let mut by_code = verb.clone();
        by_code.push(("code".into(), r.code.to_string()));
        self.invocations.get_or_create(&by_code).inc();
        self.invocation_seconds.get_or_create(&verb).observe(r.seconds);
        for d in &r.delegates {
            self.delegate_seconds.get_or_create(&vec![("type".to_string(), d.plugin_type.clone())]).observe(d.seconds);
        }
        self.api_requests.inc_by(r.api_requests.into());
        self.api_errors.inc_by(r.api_errors.into());
        for (result, n) in [("hit", r.mirror_hits), ("miss", r.mirror_misses), ("fallback", r.mirror_fallbacks)] {
            if n > 0 {
                self.mirror_lookups.get_or_create(&vec![("result".to_string(), result.to_string())]).inc_by(n.into());
            }
        }
        self.spool_records.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

const MAX_REQUEST_HEAD: usize = 8192;

/// Serve `GET /metrics` (anything else: 404) until the task is dropped. Each scrape
/// first drains the spool, so a scrape sees every invocation finished before it.
pub async fn serve(listener: TcpListener, agent: Arc<super::Agent>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                agent.drain_spool();
                ("200 OK", agent.metrics.render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
