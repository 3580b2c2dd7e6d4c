//! `GET /prometheus/sd`: the fleet's node_exporter targets as Prometheus HTTP service discovery
//! (<https://prometheus.io/docs/prometheus/latest/http_sd/>): one target group per server,
//! `HOST:9100` labelled `vps` and `tenant_id` (SPEC.md "Observability").
//!
//! Read from the store on each request (Prometheus refreshes every minute by default), so a
//! server added or removed on any node shows up at the next refresh. When the store cannot
//! answer the route says 503: Prometheus then keeps the targets it had, where an empty list
//! would drop every customer server from monitoring.

use std::net::Ipv6Addr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chom_actors::context::NodeContext;
use chom_core::inventory::VpsServer;
use serde::Serialize;
use tracing::{debug, warn};

/// node_exporter's port on every customer server.
pub const NODE_EXPORTER_PORT: u16 = 9100;

/// Most servers listed. An inventory is a few hundred servers; the cap only keeps one answer
/// (about 100 bytes a server, so at most about 1 MB) bounded should the table ever grow past
/// what one scrape configuration should hold. Servers past it (in id order) are left out and
/// a warning says so.
pub const MAX_SD_SERVERS: usize = 10_000;

/// One HTTP SD target group.
#[derive(Debug, Serialize)]
pub struct TargetGroup {
    /// `HOST:9100`.
    pub targets: [String; 1],
    /// `vps` and `tenant_id` (empty when the server has no owner).
    pub labels: Labels,
}

/// The labels of a target group.
#[derive(Debug, Serialize)]
pub struct Labels {
    /// Server id.
    pub vps: String,
    /// Owning tenant's id; `""` for a shared server (Prometheus treats an empty label as absent).
    pub tenant_id: String,
}

/// `host:port` as Prometheus takes a target: IPv6 addresses in brackets.
pub fn target(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The target groups of `servers`, at most [`MAX_SD_SERVERS`], in the order given.
pub fn target_groups(servers: &[VpsServer]) -> Vec<TargetGroup> {
    servers
        .iter()
        .take(MAX_SD_SERVERS)
        .map(|s| TargetGroup {
            targets: [target(&s.host, NODE_EXPORTER_PORT)],
            labels: Labels {
                vps: s.id.clone(),
                tenant_id: s.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
            },
        })
        .collect()
}

/// The route's handler.
pub async fn prometheus_sd(State(ctx): State<Arc<NodeContext>>) -> Response {
    let backends = match ctx.backends() {
        Some(b) if ctx.migrated() => b,
        _ => return unavailable(),
    };
    match backends.store.vps_list().await {
        Ok(servers) => {
            if servers.len() > MAX_SD_SERVERS {
                warn!(
                    servers = servers.len(),
                    listed = MAX_SD_SERVERS,
                    "/prometheus/sd: more servers than one answer lists; the rest are not scraped"
                );
            }
            axum::Json(target_groups(&servers)).into_response()
        }
        Err(error) => {
            // Reported by /health and the store's own logs; one line per failed refresh here.
            debug!(%error, "/prometheus/sd: the store did not answer");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "store not available\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, host: &str, tenant_id: Option<i64>) -> VpsServer {
        VpsServer {
            id: id.to_owned(),
            host: host.to_owned(),
            port: 22,
            user: None,
            host_key: None,
            source: "admin".to_owned(),
            tenant_id,
            max_sites: None,
        }
    }

    #[test]
    fn groups_carry_the_target_and_labels() {
        let groups = target_groups(&[
            server("web-1", "10.0.0.1", Some(7)),
            server("web-2", "::1", None),
            server("web-3", "db.example.com", None),
        ]);
        assert_eq!(
            serde_json::to_value(&groups).unwrap(),
            serde_json::json!([
                {"targets": ["10.0.0.1:9100"], "labels": {"vps": "web-1", "tenant_id": "7"}},
                {"targets": ["[::1]:9100"], "labels": {"vps": "web-2", "tenant_id": ""}},
                {"targets": ["db.example.com:9100"], "labels": {"vps": "web-3", "tenant_id": ""}},
            ])
        );
        assert_eq!(serde_json::to_string(&target_groups(&[])).unwrap(), "[]");
    }

    #[test]
    fn the_list_is_capped() {
        let many: Vec<VpsServer> = (0..MAX_SD_SERVERS + 3)
            .map(|i| server(&format!("s{i}"), "10.0.0.1", None))
            .collect();
        assert_eq!(target_groups(&many).len(), MAX_SD_SERVERS);
    }
}
