//! The manager API's own request counters and latencies, kept for the process's life.

use std::{sync::OnceLock, time::Duration};

use crate::http::Method;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

type Labels = Vec<(&'static str, String)>;

struct Requests {
    count: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

fn requests() -> &'static Requests {
    static REQUESTS: OnceLock<Requests> = OnceLock::new();
    REQUESTS.get_or_init(|| Requests {
        count: Family::default(),
        latency: Family::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
        }),
    })
}

/// The route's family: the path's first segment after `/v1` when it is one of the API's (so a
/// client cannot grow the label set with made-up paths), else `other`.
pub fn route_of(segments: &[String]) -> &'static str {
    const KNOWN: [&str; 15] = [
        "hosts",
        "join-tokens",
        "images",
        "deployments",
        "plan",
        "instances",
        "stats",
        "replication",
        "peers",
        "identity",
        "failover",
        "tokens",
        "metrics",
        "dashboard",
        "agent",
    ];
    let first = match segments {
        [v1, rest, ..] if v1 == "v1" => rest.as_str(),
        [] => "dashboard",
        [only, ..] => only.as_str(),
    };
    KNOWN.iter().find(|k| **k == first).copied().unwrap_or("other")
}

/// Counts one answered request.
pub fn observe(method: &Method, route: &'static str, status: u16, took: Duration) {
    let r = requests();
    // Made-up methods would grow the label set: they count as one.
    let method = match method {
        Method::NonStandard(_) => "other".to_owned(),
        known => known.to_string(),
    };
    let labels: Labels = vec![("method", method), ("route", route.to_owned()), ("status", status.to_string())];
    r.count.get_or_create(&labels).inc();
    r.latency.get_or_create(&labels[..2].to_vec()).observe(took.as_secs_f64());
}

pub fn register(registry: &mut Registry) {
    let r = requests();
    registry.register("api_requests", "Requests the manager's API answered", r.count.clone());
    registry.register_with_unit(
        "api_request_duration",
        "Time the manager took to answer, from the handler's start",
        Unit::Seconds,
        r.latency.clone(),
    );
}
