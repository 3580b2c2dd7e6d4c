//! The node's outbound HTTP client (reqwest), usable on a host without CA certificates.
//!
//! reqwest loads the system's trust store whenever a client is built, fails when it finds no
//! certificate (a minimal host without the `ca-certificates` package), and `Client::new`
//! panics then. Nothing the node needs in order to run depends on TLS: its observability
//! host is normally plain `http://` on a private network. So a host without a trust store
//! gets a client without trust anchors, which still speaks plain HTTP, and every `https://`
//! request is refused before it is sent, with a message naming the fix.

use std::sync::{Arc, OnceLock};

use reqwest::{ClientBuilder, Method, RequestBuilder, Url};
use tracing::warn;

/// An HTTP client; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    /// `None` only if even a client without trust anchors could not be built.
    client: Option<reqwest::Client>,
    /// Why `https://` requests are refused (or every request, without a client).
    refusal: Option<Arc<str>>,
}

impl HttpClient {
    /// A client set up by `configure` (timeouts, default headers), with the system's trust
    /// store, or without trust anchors when the system has none. Never panics.
    pub fn build(configure: impl Fn(ClientBuilder) -> ClientBuilder) -> Self {
        let system = match configure(reqwest::Client::builder()).build() {
            Ok(client) => {
                return HttpClient {
                    client: Some(client),
                    refusal: None,
                };
            }
            Err(error) => innermost(&error),
        };
        let refusal: Arc<str> = format!(
            "https:// is unavailable on this host: {system}; install the ca-certificates \
             package (apt-get install ca-certificates) or point SSL_CERT_FILE at a CA bundle, \
             then restart the node"
        )
        .into();
        // Certificates of our own (none): reqwest then leaves the system's store alone.
        match configure(reqwest::Client::builder())
            .tls_certs_only([])
            .build()
        {
            Ok(client) => HttpClient {
                client: Some(client),
                refusal: Some(refusal),
            },
            Err(error) => HttpClient {
                client: None,
                refusal: Some(format!("no HTTP client: {}; {refusal}", describe(error)).into()),
            },
        }
    }

    /// The process's client, with no client-wide timeout (each request sets its own). Built
    /// at first use; a host without a trust store is reported then, once.
    pub fn shared() -> &'static HttpClient {
        static SHARED: OnceLock<HttpClient> = OnceLock::new();
        SHARED.get_or_init(|| {
            let client = HttpClient::build(|builder| builder);
            if let Some(why) = client.tls_unavailable() {
                warn!(error = %why, "no CA certificates: plain http:// works, https:// requests fail");
            }
            client
        })
    }

    /// Why `https://` requests are refused, when they are.
    pub fn tls_unavailable(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Whether a request to `url` would be refused, and why: an `https://` URL without a
    /// trust store. A URL that does not parse is left to the request to report.
    pub fn refuses(&self, url: &str) -> Option<&str> {
        let https = Url::parse(url).is_ok_and(|u| u.scheme() == "https");
        self.refusal
            .as_deref()
            .filter(|_| https || self.client.is_none())
    }

    /// A request to `url`, or why it cannot be made (the message never holds the URL).
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, String> {
        match (&self.client, self.refuses(url.as_str())) {
            (Some(client), None) => Ok(client.request(method, url)),
            (_, why) => Err(why.unwrap_or("no HTTP client").to_owned()),
        }
    }

    /// `GET url` (see [`HttpClient::request`]).
    pub fn get(&self, url: &str) -> Result<RequestBuilder, String> {
        self.request(Method::GET, parse(url)?)
    }

    /// `POST url` (see [`HttpClient::request`]).
    pub fn post(&self, url: &str) -> Result<RequestBuilder, String> {
        self.request(Method::POST, parse(url)?)
    }
}

/// `url` parsed; the error does not repeat it (it may carry credentials).
fn parse(url: &str) -> Result<Url, String> {
    Url::parse(url).map_err(|error| format!("bad URL: {error}"))
}

/// A reqwest error with its causes ("connection refused"), without the URL (reqwest would
/// print it whole, credentials and tokens included).
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The deepest cause of `error` ("No CA certificates were loaded from the system"), without
/// the wrappers' prefixes.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(cause) = deepest.source() {
        deepest = cause;
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_tls() -> HttpClient {
        HttpClient {
            client: Some(
                reqwest::Client::builder()
                    .tls_certs_only([])
                    .build()
                    .unwrap(),
            ),
            refusal: Some("https:// is unavailable on this host".into()),
        }
    }

    #[test]
    fn without_a_trust_store_only_https_is_refused() {
        let client = without_tls();
        assert!(client.get("http://127.0.0.1:9090/-/healthy").is_ok());
        let refused = client.get("https://127.0.0.1:9090/-/healthy").unwrap_err();
        assert!(refused.contains("unavailable"), "{refused}");
        assert_eq!(
            client.refuses("HTTPS://prometheus.example/"),
            client.tls_unavailable()
        );
        assert_eq!(client.refuses("http://prometheus.example/"), None);
    }

    #[test]
    fn without_a_client_everything_is_refused() {
        let client = HttpClient {
            client: None,
            refusal: Some("no HTTP client".into()),
        };
        assert_eq!(
            client.get("http://127.0.0.1/").unwrap_err(),
            "no HTTP client"
        );
    }

    #[test]
    fn a_refusal_never_holds_the_url() {
        let client = without_tls();
        let error = client.get("https://admin:hunter2@h/?token=t").unwrap_err();
        assert!(
            !error.contains("hunter2") && !error.contains("token"),
            "{error}"
        );
    }
}
