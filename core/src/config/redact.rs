//! Secrets out of URLs, wherever one is printed or logged: the resolved configuration,
//! config errors, health check results and their logs. [`redact_url`] is the one function
//! for that; nothing else in the node prints a configured URL.
//!
//! Done on the text rather than through `url::Url` so that everything but the secret is
//! printed exactly as configured (the url crate normalises, and would re-encode `***`).

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// `url` with the password of its user info and the values of secret-looking query (and
/// fragment) parameters (`password`, `token`, `key`, `sig`, ...; case-insensitive) replaced by
/// [`REDACTED`].
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
    let (rest, fragment) = match tail.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (tail, None),
    };
    let mut out = match rest.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_params(query)),
        None => rest.to_owned(),
    };
    if let Some(fragment) = fragment {
        // OAuth implicit grants put `access_token=` in the fragment.
        out.push('#');
        out.push_str(&redact_params(fragment));
    }
    out
}

/// `a=1&token=x` with the values of secret names replaced; anything else kept as is.
fn redact_params(params: &str) -> String {
    params
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Substrings that make a parameter name secret wherever they appear (`db_password`,
/// `X-Amz-Signature`, `client_secret`, `access_token`).
const SECRET_PARTS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "auth",
    "signature",
    "credential",
];

/// Words that make a parameter name secret when they are a whole word of it (`key`,
/// `access_key`, `sig`), but not inside another word (`keyword`, `design`).
const SECRET_WORDS: &[&str] = &["key", "sig"];

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARTS.iter().any(|s| name.contains(s))
        || name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| SECRET_WORDS.contains(&word))
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
        assert_eq!(
            redact_url("https://admin:pw@host/?token=t&x=1"),
            "https://admin:***@host/?token=***&x=1"
        );
    }

    #[test]
    fn every_sensitive_parameter_is_replaced_whatever_its_case() {
        for name in [
            "token",
            "KEY",
            "Secret",
            "password",
            "pass",
            "pwd",
            "auth",
            "Signature",
            "sig",
            "access_token",
            "apikey",
            "API_KEY",
            "X-Amz-Signature",
            "access_key",
            "client_secret",
        ] {
            let url = format!("https://h/p?a=1&{name}=hunter2&b=2");
            assert_eq!(
                redact_url(&url),
                format!("https://h/p?a=1&{name}=***&b=2"),
                "{name}"
            );
        }
        assert_eq!(
            redact_url("https://h/cb#access_token=hunter2&state=s"),
            "https://h/cb#access_token=***&state=s"
        );
        // Words that merely contain `key` or `sig` are not secrets.
        assert_eq!(
            redact_url("https://h/?keyword=a&design=b"),
            "https://h/?keyword=a&design=b"
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
