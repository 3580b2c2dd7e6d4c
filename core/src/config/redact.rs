//! Secrets out of URLs, for printing the resolved configuration.
//!
//! Done on the text rather than through `url::Url` so that everything but the secret is
//! printed exactly as configured (the url crate normalises, and would re-encode `***`).

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// `url` with the password of its user info and the values of secret-looking query
/// parameters (`password`, `token`, `secret`, ...) replaced by [`REDACTED`].
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    format!("{head}{authority}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass", "pwd", "secret", "token", "apikey", "api_key", "auth",
    ]
    .iter()
    .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://chom:hunter2@db:5432/chom"),
            "postgres://chom:***@db:5432/chom"
        );
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        // '@' inside the password: the host starts after the last one.
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x&sslmode=require#frag"),
            "postgres://h/db?user=u&password=***&sslmode=require#frag"
        );
        assert_eq!(
            redact_url("https://grafana.example/?token=abc"),
            "https://grafana.example/?token=***"
        );
    }

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "sqlite://./var/chom.db",
            "sqlite:///var/lib/chom/chom.db?mode=rwc",
            "memory://",
            "redis://127.0.0.1:6379/0",
            "postgres://chom@db/chom",
            "http://127.0.0.1:9090",
            "",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
