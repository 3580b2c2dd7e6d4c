//! The tenant API's answers that are not a success: `{"error": CODE, "message": TEXT}` with
//! the status that goes with the code (SPEC.md "Tenant API"), Prometheus' own error shape for
//! the metrics route, and the JSON body extractor whose rejections use the same shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chom_core::limits::escape_control;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Longest message echoed back from a parser's complaint (which may quote the input).
const MAX_MESSAGE_CHARS: usize = 300;

/// One error answer of the tenant API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An answer of `status` with `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401: no usable bearer token (the answer carries `WWW-Authenticate: Bearer`).
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`: also what another tenant's resource looks like.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// 400 `bad_request`: a value outside what the route accepts.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 429 `rate_limited`, with `Retry-After` and `retry_after`.
    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit of this tenant's tier exceeded; retry after {retry_after} s"),
            )
        }
    }

    /// 503 `unavailable`: the database cannot answer now (why is logged, not told).
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node's database is not available; try again shortly",
        )
    }

    /// 503 `timeout`: the request outlived `api.request_timeout`.
    pub fn timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no answer within {} (api.request_timeout)",
                humantime::format_duration(limit)
            ),
        )
    }

    /// The code (`not_found`, ...).
    #[cfg(test)]
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(seconds) = self.retry_after {
            body["retry_after"] = json!(seconds);
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The code of an error answer by its status, for answers made outside the handlers (a
/// rejected path, an unknown method) that are turned into the JSON shape.
pub fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// A complaint from a parser, cut short and with control characters escaped.
pub fn echo(text: &str) -> String {
    let cut = text
        .char_indices()
        .nth(MAX_MESSAGE_CHARS)
        .map_or(text, |(i, _)| &text[..i]);
    escape_control(cut).into_owned()
}

/// A 400 in Prometheus' error shape (`bad_data`), as the metrics route answers a query it
/// refuses: clients of Prometheus' API read errors this way.
pub fn bad_data(message: &str) -> Response {
    let body = json!({ "status": "error", "errorType": "bad_data", "error": echo(message) });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// A JSON request body, refused in the API's error shape: 400 `bad_json` when it is not JSON,
/// 400 `bad_request` when it is JSON of the wrong shape (unknown or missing fields, wrong
/// types), 415 without `Content-Type: application/json`, 413 `too_large` over `api.max_body`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(rejected(&rejection)),
        }
    }
}

fn rejected(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    let text = echo(&rejection.body_text());
    match rejection {
        JsonRejection::JsonSyntaxError(_) => ApiError::new(status, "bad_json", text),
        JsonRejection::JsonDataError(_) => ApiError::bad_request(text),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            status,
            "unsupported_media_type",
            "the body must be JSON with Content-Type: application/json",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "too_large",
            "the request body is larger than api.max_body",
        ),
        _ => ApiError::new(status, code_of(status), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_statuses() {
        assert_eq!(code_of(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(
            code_of(StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
        assert_eq!(code_of(StatusCode::BAD_GATEWAY), "internal");
        assert_eq!(code_of(StatusCode::UNPROCESSABLE_ENTITY), "bad_request");
    }

    #[test]
    fn echoes_are_short_and_escaped() {
        let long = "x".repeat(1000);
        assert_eq!(echo(&long).len(), MAX_MESSAGE_CHARS);
        assert_eq!(echo("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }
}
