//! JSON-RPC 2.0 wire types and request validation.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// The operation was valid but failed (e.g. no actor at that path).
pub const OPERATION_FAILED: i64 = -32000;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// One of the codes above.
    pub code: i64,
    /// Human-readable, lowercase.
    pub message: String,
    /// Extra structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    /// -32602 with a message.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
    /// -32000 with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(OPERATION_FAILED, message)
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method name.
    pub method: String,
    /// `params`, or `{}` when absent.
    pub params: Value,
    /// `None` for a notification (no response is sent).
    pub id: Option<Value>,
}

/// Validate one request object. On error, returns the id to answer with (null if unknown).
pub fn parse_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "request must be a JSON object"),
        ));
    };
    let id = obj.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err((
            Value::Null,
            RpcError::new(INVALID_REQUEST, "id must be a string, number or null"),
        ));
    }
    if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err((
            reply_id,
            RpcError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\""),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return Err((
                reply_id,
                RpcError::new(INVALID_REQUEST, "method must be a string"),
            ));
        }
    };
    let params = match obj.remove("params") {
        None => json!({}),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => {
            return Err((
                reply_id,
                RpcError::new(INVALID_REQUEST, "params must be an object or an array"),
            ));
        }
    };
    Ok(Request { method, params, id })
}

/// A success response.
pub fn success(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response.
pub fn failure(id: Value, error: RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_requests_parse() {
        let r = parse_request(json!({"jsonrpc":"2.0","method":"status","id":1})).unwrap();
        assert_eq!(
            r,
            Request {
                method: "status".into(),
                params: json!({}),
                id: Some(json!(1))
            }
        );
        let n = parse_request(json!({"jsonrpc":"2.0","method":"tree","params":{"a":1}})).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(n.params, json!({"a":1}));
    }

    #[test]
    fn invalid_requests_are_rejected_with_their_id() {
        let cases = [
            (json!(5), Value::Null),
            (json!({"method":"status","id":3}), json!(3)),
            (
                json!({"jsonrpc":"1.0","method":"status","id":"x"}),
                json!("x"),
            ),
            (json!({"jsonrpc":"2.0","method":7,"id":4}), json!(4)),
            (
                json!({"jsonrpc":"2.0","method":"m","params":"p","id":5}),
                json!(5),
            ),
            (
                json!({"jsonrpc":"2.0","method":"m","id":{"o":1}}),
                Value::Null,
            ),
        ];
        for (value, want_id) in cases {
            let (id, err) = parse_request(value.clone()).unwrap_err();
            assert_eq!(err.code, INVALID_REQUEST, "{value}");
            assert_eq!(id, want_id, "{value}");
        }
    }
}
