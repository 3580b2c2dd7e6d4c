//! Signing in and out, and the gate every request passes: the session cookie, the same-origin
//! check and the CSRF token of every POST.
//!
//! Failed sign-ins are throttled per operator name and per source address
//! ([`chom_core::signin`]): from the fourth wrong password in a row the name (or address) is
//! locked for 1 s, doubling with each further failure up to 15 min, and while it is locked
//! a sign-in is answered 429 with `Retry-After` before any password is checked.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chom_actors::context::Backends;
use chom_core::config::is_name;
use chom_store::SESSION_TOUCH_INTERVAL;
use serde::Deserialize;
use tracing::{info, warn};

use super::auth::{MAX_PASSWORD_BYTES, SessionId, SessionKey, verify_password};
use super::pages::{Html, error_page};
use super::{MAX_FORM_BYTES, UiState};
use crate::edge::http::Peer;

/// The session cookie's name.
pub const COOKIE: &str = "chom_session";

/// The signed-in operator of a request, for its page or action.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Sign-in name.
    pub name: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    session: SessionId,
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

fn idle_cutoff(ui: &UiState) -> chrono::DateTime<chrono::Utc> {
    let idle = chrono::Duration::from_std(ui.ctx.config.ui.session_idle).unwrap_or_default();
    chrono::Utc::now() - idle
}

fn backends(ui: &UiState) -> Result<Backends, Response> {
    let ready = ui.ctx.migrated().then(|| ui.ctx.backends()).flatten();
    ready.ok_or_else(|| {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is not ready yet; try again in a moment.",
        )
    })
}

/// A path of this console to return to after signing in: local (`/x`, never `//host`) and
/// short, else the overview.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 512
                && !p.bytes().any(|b| b.is_ascii_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A POST coming from a page of another origin (or a browser that says it is cross-site).
///
/// `Sec-Fetch-Site`, which a page cannot set, decides when present: the console's own
/// `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on its forms' POSTs, so
/// the Origin alone would refuse them. Without it, a foreign Origin is refused; a missing or
/// `null` one is left to the CSRF token.
fn cross_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() != b"same-origin" && site.as_bytes() != b"none";
    }
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host != Some(host)
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn set_cookie(ui: &UiState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if ui.ctx.config.ui.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are hex and fixed text")
}

/// The operator of a valid, unexpired session, and whether it was due for a touch.
async fn operator(
    ui: &UiState,
    key: &SessionKey,
    headers: &HeaderMap,
) -> Result<Option<(Operator, bool)>, Response> {
    let Some(id) = session_cookie(headers).and_then(|v| key.open_cookie(v)) else {
        return Ok(None);
    };
    let b = backends(ui)?;
    let found = b.store.ui_session(&id.hash(), idle_cutoff(ui)).await;
    let session = match found {
        Ok(Some(session)) => session,
        Ok(None) => return Ok(None),
        Err(e) => {
            warn!(error = %e, "web console: cannot look a session up (database)");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database did not answer; try again in a moment.",
            ));
        }
    };
    let due = chrono::Utc::now() - session.last_seen_at >= SESSION_TOUCH_INTERVAL;
    if due {
        let (store, hash) = (b.store.clone(), id.hash());
        tokio::spawn(async move {
            // Best effort: a failure only makes the session look idle sooner.
            let _ = store.touch_ui_session(&hash, chrono::Utc::now()).await;
        });
    }
    Ok(Some((
        Operator {
            name: session.user,
            csrf: key.csrf(&id),
            session: id,
        },
        due,
    )))
}

/// Without a session: a page redirects to sign-in (coming back afterwards), anything else
/// is refused.
fn refuse(request: &Request) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        let back = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let next = url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>();
        Redirect::to(&format!("/signin?next={next}")).into_response()
    } else {
        error_page(StatusCode::FORBIDDEN, "Sign in first.")
    }
}

/// The gate in front of every route (see the module's doc).
pub async fn gate(State(ui): State<Arc<UiState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let public = path == "/signin" || path.starts_with("/assets/");
    let writes = request.method() != Method::GET && request.method() != Method::HEAD;
    if writes && cross_origin(request.headers()) {
        return error_page(StatusCode::FORBIDDEN, "Cross-site requests are refused.");
    }
    if public {
        return next.run(request).await;
    }
    let key = match ui.key() {
        Ok(key) => key.clone(),
        Err(refused) => return refused,
    };
    let (operator, touched) = match operator(&ui, &key, request.headers()).await {
        Ok(Some(found)) => found,
        Ok(None) => return refuse(&request),
        Err(refused) => return refused,
    };
    let mut request = if writes {
        match csrf_checked(&key, &operator, request).await {
            Ok(request) => request,
            Err(refused) => return refused,
        }
    } else {
        request
    };
    let cookie = key.cookie(&operator.session);
    request.extensions_mut().insert(operator);
    let mut response = next.run(request).await;
    if touched {
        // The cookie's lifetime follows the session's: renewed with it.
        let idle = ui.ctx.config.ui.session_idle.as_secs();
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&ui, &cookie, idle));
    }
    response
}

/// The request with its body read back in, when the form's `csrf` field is the session's
/// token; else 403 and nothing runs.
async fn csrf_checked(
    key: &SessionKey,
    operator: &Operator,
    request: Request,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !key.csrf_holds(&operator.session, &token) {
        warn!(operator = %operator.name, "web console: a POST without a valid CSRF token was refused");
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from the console; reload the page and try again.",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    next: String,
    message: Option<String>,
}

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /signin`.
pub async fn signin_page(Query(q): Query<NextQuery>) -> Response {
    Html(SignInPage {
        next: local_path(q.next.as_deref()),
        message: None,
    })
    .into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignInForm {
    name: String,
    password: String,
    next: Option<String>,
}

fn signin_refused(status: StatusCode, next: String, message: &str) -> Response {
    let mut response = Html(SignInPage {
        next,
        message: Some(message.to_owned()),
    })
    .into_response();
    *response.status_mut() = status;
    response
}

/// `POST /signin`.
pub async fn signin(
    State(ui): State<Arc<UiState>>,
    peer: Option<axum::Extension<Peer>>,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let key = match ui.key() {
        Ok(key) => key.clone(),
        Err(refused) => return refused,
    };
    let source = peer.map_or_else(|| "unknown".to_owned(), |p| p.0.0.ip().to_string());
    let keys = [format!("user:{}", form.name), format!("source:{source}")];
    let now = now_ms();
    let locked = {
        let throttle = ui.shared.throttle.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| throttle.check(k, now).err())
            .max()
    };
    if let Some(wait_ms) = locked {
        let seconds = wait_ms.div_ceil(1000);
        let mut refused = signin_refused(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            &format!("Too many wrong passwords in a row. Try again in {seconds} s."),
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return refused;
    }
    match check_password(&ui, &form).await {
        Ok(Some(user_id)) => {
            {
                let mut throttle = ui.shared.throttle.lock().unwrap_or_else(|e| e.into_inner());
                keys.iter().for_each(|k| throttle.succeeded(k));
            }
            start_session(&ui, &key, user_id, &form.name, &source, next).await
        }
        Ok(None) => {
            // The lock runs from the answer, not from the request: checking took a while.
            let now = now_ms();
            let lock = {
                let mut throttle = ui.shared.throttle.lock().unwrap_or_else(|e| e.into_inner());
                keys.iter()
                    .map(|k| throttle.failed(k, now))
                    .max()
                    .unwrap_or(0)
            };
            warn!(
                operator = %chom_core::limits::escape_control(crate::api::truncated(&form.name)),
                %source,
                locked_ms = lock,
                "web console: wrong name or password"
            );
            signin_refused(StatusCode::UNAUTHORIZED, next, "Wrong name or password.")
        }
        Err(refused) => refused,
    }
}

/// The operator's id when the name and password match; `None` when they do not (an unknown
/// name costs the same time as a wrong password).
async fn check_password(ui: &UiState, form: &SignInForm) -> Result<Option<i64>, Response> {
    let plausible = is_name(&form.name) && form.password.len() <= MAX_PASSWORD_BYTES;
    let b = backends(ui)?;
    let user = if plausible {
        b.store.ui_user(&form.name).await.map_err(|e| {
            warn!(error = %e, "web console: cannot look an operator up (database)");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database did not answer.",
            )
        })?
    } else {
        None
    };
    let _slot = ui
        .shared
        .hashing
        .acquire()
        .await
        .map_err(|_| error_page(StatusCode::SERVICE_UNAVAILABLE, "The console is stopping."))?;
    let password = form.password.clone();
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
        .await
        .unwrap_or(false);
    Ok(user.filter(|_| ok).map(|u| u.id))
}

async fn start_session(
    ui: &UiState,
    key: &SessionKey,
    user_id: i64,
    name: &str,
    source: &str,
    next: String,
) -> Response {
    let Ok(id) = SessionId::generate() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "No randomness for a session.",
        );
    };
    let b = match backends(ui) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    if let Err(e) = b
        .store
        .create_ui_session(user_id, &id.hash(), idle_cutoff(ui))
        .await
    {
        warn!(error = %e, "web console: cannot store a session (database)");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database did not answer.",
        );
    }
    info!(operator = name, %source, "web console: signed in");
    let idle = ui.ctx.config.ui.session_idle.as_secs();
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(ui, &key.cookie(&id), idle));
    response
}

/// `POST /signout` (CSRF-checked by the gate): the session ends in the store, the cookie in
/// the browser.
pub async fn signout(
    State(ui): State<Arc<UiState>>,
    axum::Extension(operator): axum::Extension<Operator>,
) -> Response {
    if let Ok(b) = backends(&ui)
        && let Err(e) = b.store.end_ui_session(&operator.session.hash()).await
    {
        warn!(error = %e, "web console: cannot end a session (database)");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database did not answer.",
        );
    }
    info!(operator = %operator.name, "web console: signed out");
    let mut response = Redirect::to("/signin").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&ui, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/jobs?state=failed")), "/jobs?state=failed");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "jobs",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cross_origin_posts_are_recognized() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8082"));
        assert!(
            !cross_origin(&h),
            "no Origin: a same-site form of an old browser"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8082"),
        );
        assert!(!cross_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8082"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_origin(&h));
        // What a browser sends for the console's own forms under no-referrer.
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_origin(&h));
        h.remove("sec-fetch-site");
        assert!(!cross_origin(&h), "null origin: left to the CSRF token");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(
            cross_origin(&h),
            "another port or subdomain is another origin"
        );
    }
}
