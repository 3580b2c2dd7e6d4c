//! `POST /webhooks/alertmanager`: Alertmanager's webhook (payload version 4) into the node's
//! store, for `chom alerts` and the `alerts` health check (SPEC.md "Observability").
//!
//! The order of the checks is the order of their cost: the route is off (404) while
//! `observability.webhook_token` is empty; the bearer token is compared (401) before a byte
//! of the body is read, so a client without it cannot make the node buffer anything; the
//! body is read up to [`MAX_BODY_BYTES`] (413 above); the payload is checked whole (400
//! naming the field) before anything is stored; then the call's changes are committed in one
//! transaction before the 200. A store that is not there or fails is 503, which Alertmanager
//! retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chom_actors::context::NodeContext;
use chom_core::alert::{
    Alert, AlertStatus, AlertUpdate, MAX_ALERT_LABELS, MAX_ALERTS_PER_CALL,
    MAX_ANNOTATION_VALUE_CHARS, MAX_FINGERPRINT_CHARS, MAX_GENERATOR_URL_CHARS,
    MAX_LABEL_NAME_CHARS, MAX_LABEL_VALUE_CHARS,
};
use chom_core::limits;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

/// The largest body accepted, in bytes (the shipped config's 100 alerts per call fit easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An alert not re-sent for this long is forgotten: Alertmanager re-sends firing alerts every
/// `repeat_interval` (4h in the shipped config), so a day without one means its resolution
/// was missed (the node was down, say), and the table stays bounded.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The longest error message sent back for a refused payload.
const MAX_MESSAGE_CHARS: usize = 300;

/// Alertmanager's webhook payload, version 4: the fields the node uses. Others
/// (`groupKey`, `receiver`, `groupLabels`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct Payload {
    version: String,
    status: String,
    alerts: Vec<WireAlert>,
}

/// One alert of a [`Payload`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlert {
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// The alerts of a webhook body, checked: each one's status is `firing` or `resolved`.
/// The error names the field (`alerts[2].fingerprint: ...`).
pub fn parse(body: &[u8]) -> Result<Vec<Alert>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let payload: Payload = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    de.end().map_err(|e| format!("trailing data: {e}"))?;
    if payload.version != "4" {
        return Err(format!(
            "version: must be \"4\", got {:?}",
            limits::cut_at_char_boundary(&payload.version, 16)
        ));
    }
    if AlertStatus::parse(&payload.status).is_none() {
        return Err("status: must be \"firing\" or \"resolved\"".to_owned());
    }
    if payload.alerts.len() > MAX_ALERTS_PER_CALL {
        return Err(format!(
            "alerts: at most {MAX_ALERTS_PER_CALL} per call, got {}",
            payload.alerts.len()
        ));
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, alert)| check_alert(alert).map_err(|e| format!("alerts[{i}].{e}")))
        .collect()
}

/// One alert, checked field by field; the error starts with the field's name.
fn check_alert(a: WireAlert) -> Result<Alert, String> {
    let status = AlertStatus::parse(&a.status)
        .ok_or_else(|| "status: must be \"firing\" or \"resolved\"".to_owned())?;
    check_map("labels", &a.labels, MAX_LABEL_VALUE_CHARS)?;
    check_map("annotations", &a.annotations, MAX_ANNOTATION_VALUE_CHARS)?;
    let alertname = match a.labels.get("alertname") {
        Some(name) if !name.is_empty() => name.clone(),
        _ => return Err("labels.alertname: required, not empty".to_owned()),
    };
    let fingerprint = a.fingerprint;
    if fingerprint.is_empty()
        || fingerprint.len() > MAX_FINGERPRINT_CHARS
        || !fingerprint.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "fingerprint: 1 to {MAX_FINGERPRINT_CHARS} visible ASCII characters"
        ));
    }
    if a.generator_url.chars().count() > MAX_GENERATOR_URL_CHARS {
        return Err(format!(
            "generatorURL: at most {MAX_GENERATOR_URL_CHARS} characters"
        ));
    }
    Ok(Alert {
        severity: a.labels.get("severity").cloned(),
        fingerprint,
        alertname,
        status,
        labels: a.labels,
        annotations: a.annotations,
        starts_at: limits::clamp_time(a.starts_at),
        // Alertmanager sends its zero time (year 1) when an alert has no end.
        ends_at: (a.ends_at > limits::min_time()).then(|| limits::clamp_time(a.ends_at)),
        generator_url: a.generator_url,
    })
}

/// Labels or annotations: at most [`MAX_ALERT_LABELS`], names 1 to
/// [`MAX_LABEL_NAME_CHARS`] characters, values at most `max_value` characters.
fn check_map(what: &str, map: &BTreeMap<String, String>, max_value: usize) -> Result<(), String> {
    if map.len() > MAX_ALERT_LABELS {
        return Err(format!(
            "{what}: at most {MAX_ALERT_LABELS}, got {}",
            map.len()
        ));
    }
    // A refused name is echoed cut short and with control characters escaped.
    let shown =
        |name: &str| limits::escape_control(limits::cut_at_char_boundary(name, 64)).into_owned();
    for (name, value) in map {
        if name.is_empty() || name.chars().count() > MAX_LABEL_NAME_CHARS {
            return Err(format!(
                "{what}: names must be 1 to {MAX_LABEL_NAME_CHARS} characters ({:?})",
                shown(name)
            ));
        }
        if value.chars().count() > max_value {
            return Err(format!(
                "{what}.{}: at most {max_value} characters",
                shown(name)
            ));
        }
    }
    Ok(())
}

/// What a stored alert becomes: a firing one is kept, a resolved one forgotten.
fn update(alert: Alert) -> AlertUpdate {
    match alert.status {
        AlertStatus::Firing => AlertUpdate::Firing(alert),
        AlertStatus::Resolved => AlertUpdate::Resolved {
            fingerprint: alert.fingerprint,
        },
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`. The comparison takes the same
/// time whatever the bytes given, so the token cannot be found byte by byte.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && same_bytes(given, token.as_bytes())
}

/// Constant-time equality: every byte is looked at, whatever differs first. Lengths are not
/// hidden (the token's length is no secret: 16 to 256 characters).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The body length the head announces (`Content-Length`), when it gives a number.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn answer(status: StatusCode, message: &str) -> Response {
    let message = limits::cut_at_char_boundary(message, MAX_MESSAGE_CHARS);
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The handler of `POST /webhooks/alertmanager` (the route's body limit is
/// [`MAX_BODY_BYTES`]).
pub async fn alertmanager(State(ctx): State<Arc<NodeContext>>, request: Request) -> Response {
    let token = &ctx.config.observability.webhook_token;
    if token.is_empty() {
        return answer(StatusCode::NOT_FOUND, "the webhook is off");
    }
    if !authorized(request.headers(), token) {
        let mut response = answer(StatusCode::UNAUTHORIZED, "bearer token missing or wrong");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    // A body announced larger than the limit is refused before a byte of it is read; Bytes
    // honours the route's DefaultBodyLimit for the rest (a chunked body that grows past it).
    if announced_length(request.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than 1 MiB (send fewer alerts per call: max_alerts)",
        );
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let alerts = match parse(&body) {
        Ok(alerts) => alerts,
        Err(message) => {
            warn!(%message, "webhook: refused an Alertmanager payload");
            return answer(StatusCode::BAD_REQUEST, &message);
        }
    };
    store(&ctx, alerts).await
}

/// Commit the alerts' changes, then count them and answer 200; 503 when the store is not
/// there or fails.
async fn store(ctx: &NodeContext, alerts: Vec<Alert>) -> Response {
    let Some(backends) = ctx.backends().filter(|_| ctx.migrated()) else {
        return unavailable("database not ready");
    };
    let received: Vec<(String, AlertStatus)> = alerts
        .iter()
        .map(|a| (a.alertname.clone(), a.status))
        .collect();
    let updates: Vec<AlertUpdate> = alerts.into_iter().map(update).collect();
    if let Err(error) = backends.store.apply_alerts(&updates).await {
        warn!(%error, alerts = updates.len(), "webhook: cannot store alerts; answering 503");
        return unavailable("cannot store the alerts");
    }
    for (alertname, status) in &received {
        ctx.metrics.alert_received(alertname, status.as_str());
    }
    // Best effort: a stale row only lingers until the next call.
    let stale = limits::saturating_before(Utc::now(), STALE_AFTER);
    match backends.store.forget_stale_alerts(stale).await {
        Ok(0) => {}
        Ok(n) => info!(alerts = n, "webhook: forgot alerts not re-sent for a day"),
        Err(error) => warn!(%error, "webhook: cannot forget stale alerts"),
    }
    let firing = received
        .iter()
        .filter(|(_, s)| *s == AlertStatus::Firing)
        .count();
    info!(
        firing,
        resolved = received.len() - firing,
        "webhook: alerts stored"
    );
    (
        StatusCode::OK,
        axum::Json(json!({ "stored": received.len() })),
    )
        .into_response()
}

fn unavailable(message: &str) -> Response {
    let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn alert(status: &str, fingerprint: &str) -> Value {
        json!({
            "status": status,
            "labels": {"alertname": "QueueBacklog", "severity": "critical", "queue": "default"},
            "annotations": {"summary": "jobs waiting", "runbook_url": "https://x/runbook#q"},
            "startsAt": "2026-01-02T03:04:05.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            "fingerprint": fingerprint,
        })
    }

    fn payload(alerts: Vec<Value>) -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"QueueBacklog\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "chom-node",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        })
    }

    fn parsed(v: &Value) -> Result<Vec<Alert>, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_v4_payload_becomes_alerts() {
        let alerts = parsed(&payload(vec![
            alert("firing", "a1b2c3d4e5f60718"),
            alert("resolved", "ffff"),
        ]))
        .unwrap();
        assert_eq!(alerts.len(), 2);
        let a = &alerts[0];
        assert_eq!(a.alertname, "QueueBacklog");
        assert_eq!(a.severity.as_deref(), Some("critical"));
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.labels["queue"], "default");
        assert_eq!(a.annotations["summary"], "jobs waiting");
        assert_eq!(
            a.starts_at.to_rfc3339(),
            "2026-01-02T03:04:05.123456789+00:00"
        );
        assert_eq!(a.ends_at, None, "the zero time is no end");
        assert_eq!(alerts[1].status, AlertStatus::Resolved);
        assert!(
            matches!(update(alerts[1].clone()), AlertUpdate::Resolved { fingerprint } if fingerprint == "ffff")
        );
        assert!(parsed(&payload(vec![])).unwrap().is_empty());
    }

    /// A one-alert payload with the field at `path` (`alerts.0.labels`) set to `value`, or
    /// removed when `value` is null.
    fn with(path: &str, value: Value) -> Value {
        let mut p = payload(vec![alert("firing", "aa")]);
        let keys: Vec<&str> = path.split('.').collect();
        let (last, parents) = keys.split_last().unwrap();
        let mut at = &mut p;
        for key in parents {
            at = match key.parse::<usize>() {
                Ok(n) => &mut at[n],
                Err(_) => &mut at[*key],
            };
        }
        if value.is_null() {
            at.as_object_mut().unwrap().remove(*last);
        } else {
            at[*last] = value;
        }
        p
    }

    /// Each bad payload is refused with a message naming the field.
    #[test]
    fn bad_payloads_are_refused_naming_the_field() {
        let many = Value::Object((0..65).map(|i| (format!("l{i}"), json!("v"))).collect());
        let long = |n: usize| json!("x".repeat(n));
        let null = Value::Null;
        let label = "alerts[0].labels.alertname";
        let long_name = format!("alerts.0.labels.{}", "n".repeat(129));
        let cases: Vec<(&str, Value, &str)> = vec![
            ("version", json!("3"), "version"),
            ("version", json!(4), "version"),
            ("status", json!("pending"), "status"),
            ("alerts", null.clone(), "alerts"),
            ("alerts", json!({}), "alerts"),
            ("alerts.0.status", json!("gone"), "alerts[0].status"),
            ("alerts.0.fingerprint", null.clone(), "fingerprint"),
            ("alerts.0.fingerprint", json!(""), "alerts[0].fingerprint"),
            ("alerts.0.fingerprint", long(65), "alerts[0].fingerprint"),
            (
                "alerts.0.fingerprint",
                json!("a b"),
                "alerts[0].fingerprint",
            ),
            ("alerts.0.labels", json!({"severity": "critical"}), label),
            ("alerts.0.labels", json!({"alertname": ""}), label),
            ("alerts.0.labels", json!({"alertname": 5}), label),
            ("alerts.0.labels", many.clone(), "alerts[0].labels"),
            (
                "alerts.0.labels.",
                json!("empty name"),
                "alerts[0].labels: names",
            ),
            (&long_name, json!("v"), "labels: names"),
            ("alerts.0.labels.alertname", long(1025), label),
            ("alerts.0.annotations", many, "alerts[0].annotations"),
            (
                "alerts.0.annotations.description",
                long(8193),
                "annotations.description",
            ),
            ("alerts.0.annotations", null.clone(), "annotations"),
            (
                "alerts.0.startsAt",
                json!("yesterday"),
                "alerts[0].startsAt",
            ),
            ("alerts.0.endsAt", null, "endsAt"),
            (
                "alerts.0.generatorURL",
                long(2049),
                "alerts[0].generatorURL",
            ),
        ];
        for (path, value, field) in cases {
            let error = parsed(&with(path, value)).expect_err(field);
            assert!(error.contains(field), "{field}: {error}");
            assert!(error.len() < 400, "{field}: a short message: {error}");
        }
        let too_many: Vec<Value> = (0..=MAX_ALERTS_PER_CALL)
            .map(|i| alert("firing", &format!("f{i}")))
            .collect();
        let error = parsed(&payload(too_many)).unwrap_err();
        assert!(error.starts_with("alerts:"), "{error}");
        assert!(parse(b"{").unwrap_err().contains("EOF"));
        assert!(parse(b"[]").is_err());
    }

    #[test]
    fn the_token_is_compared_whole() {
        let token = "s3cret-token-0123456789";
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert!(authorized(&with(&format!("Bearer {token}")), token));
        assert!(authorized(&with(&format!("bearer {token}")), token));
        assert!(!authorized(&HeaderMap::new(), token));
        assert!(!authorized(&with(token), token));
        assert!(!authorized(&with(&format!("Basic {token}")), token));
        assert!(!authorized(&with(&format!("Bearer {token}x")), token));
        assert!(!authorized(&with("Bearer s3cret-token-012345678"), token));
        assert!(!authorized(&with("Bearer "), token));
        assert!(!authorized(&with("Bearer"), token));
        assert!(same_bytes(b"", b""));
        assert!(!same_bytes(b"a", b"b"));
    }
}
