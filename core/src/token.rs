//! Tenant API tokens: the secret a client sends as `Authorization: Bearer TOKEN`, its stored
//! form (the hex SHA-256 of the token, never the token), and the row describing it.
//!
//! A token is `chom_` followed by 64 lowercase hex digits (32 random bytes from the operating
//! system). [`Secret::parse`] checks that shape before anything reaches the database, so a
//! garbage or oversized header costs one length check, not a query. The secret's `Debug`
//! is redacted: a token logged by accident through `{:?}` shows as `Secret(..)`.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What every token starts with: it says what the string is (secret scanners, a pasted token
/// recognized in a support ticket) and lets [`Secret::parse`] refuse other bearer values at once.
pub const TOKEN_PREFIX: &str = "chom_";

/// Random bytes in a token: 256 bits, beyond guessing.
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// Length of a token: the prefix and two hex digits per random byte.
pub const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + 2 * TOKEN_RANDOM_BYTES;

/// Length of the stored hash: the hex SHA-256.
pub const HASH_CHARS: usize = 64;

/// The name a token gets when none is given.
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// Why a token could not be made or a bearer value is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The operating system gave no random bytes (no token is made from weaker ones).
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// A bearer value that is not a token's shape (the value itself is never repeated).
    #[error("not a chom API token (`chom_` and 64 lowercase hex digits)")]
    Malformed,
    /// An `Authorization` header that is not `Bearer TOKEN`.
    #[error("the Authorization header must be `Bearer TOKEN`")]
    NotBearer,
}

/// A token in clear: made once by [`Secret::generate`] (shown to the operator, then dropped)
/// or read from a request by [`Secret::parse`]. Only its [`TokenHash`] is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new token from 32 bytes of the operating system's random source.
    pub fn generate() -> Result<Secret, TokenError> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| TokenError::Random(e.to_string()))?;
        Ok(Secret::from_random(&bytes))
    }

    /// The token made of these random bytes (tests use fixed ones).
    pub fn from_random(bytes: &[u8; TOKEN_RANDOM_BYTES]) -> Secret {
        let mut text = String::with_capacity(TOKEN_CHARS);
        text.push_str(TOKEN_PREFIX);
        push_hex(&mut text, bytes);
        Secret(text)
    }

    /// `value` when it has a token's shape: the prefix, then exactly 64 lowercase hex digits.
    pub fn parse(value: &str) -> Result<Secret, TokenError> {
        let well_formed = value.len() == TOKEN_CHARS
            && value.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        if well_formed {
            Ok(Secret(value.to_owned()))
        } else {
            Err(TokenError::Malformed)
        }
    }

    /// The token of an `Authorization` header value: `Bearer` (any case), one or more spaces,
    /// the token (RFC 6750 section 2.1).
    pub fn from_authorization(header: &str) -> Result<Secret, TokenError> {
        let (scheme, rest) = header.split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::NotBearer);
        }
        Secret::parse(rest.trim_start_matches(' '))
    }

    /// The token itself, to show once to whoever asked for it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored and looked up: the hex SHA-256 of the token.
    pub fn hash(&self) -> TokenHash {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut text = String::with_capacity(HASH_CHARS);
        push_hex(&mut text, &digest);
        TokenHash(text)
    }
}

/// The stored form of a token: 64 lowercase hex digits of its SHA-256. A fast hash is enough:
/// the token carries 256 random bits, so there is nothing to brute-force from a leaked hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// The hex text, as stored in `api_tokens.hash`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// A tenant's API token as stored in `api_tokens`, without its hash (a wire type: listings
/// and the HTTP API's authentication return it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Database id (`chom tenants revoke ID`).
    pub id: i64,
    /// The tenant it acts for.
    pub tenant_id: i64,
    /// The operator's label (`ci`, `panel`), at most
    /// [`MAX_TOKEN_NAME_CHARS`](crate::limits::MAX_TOKEN_NAME_CHARS) characters.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request, to within a minute; `None` = never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_shape_parse_accepts_and_differ() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert!(a.expose().starts_with("chom_"));
        assert_eq!(Secret::parse(a.expose()).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Secret(..)");
    }

    #[test]
    fn the_hash_is_the_hex_sha256_of_the_token() {
        let secret = Secret::from_random(&[0xab; TOKEN_RANDOM_BYTES]);
        assert_eq!(secret.expose(), format!("chom_{}", "ab".repeat(32)));
        let hash = secret.hash();
        assert_eq!(hash.as_str().len(), HASH_CHARS);
        // `printf 'chom_000…0' | sha256sum` (64 zeros)
        assert_eq!(
            Secret::from_random(&[0; 32]).hash().as_str(),
            "7f6ef5c979efd70482824234078a39d49fc4fc878e9d1a2ef9f44a1c25765ee4"
        );
        assert_ne!(hash, Secret::from_random(&[0; 32]).hash());
    }

    #[test]
    fn bearer_values_of_another_shape_are_refused() {
        let good = format!("chom_{}", "0123456789abcdef".repeat(4));
        assert!(Secret::parse(&good).is_ok());
        for bad in [
            String::new(),
            "chom_".to_owned(),
            format!("chom_{}", "0".repeat(63)),
            format!("chom_{}", "0".repeat(65)),
            format!("chom_{}", "A".repeat(64)),
            format!("chom_{}g", "0".repeat(63)),
            format!("CHOM_{}", "0".repeat(64)),
            format!("xxxx_{}", "0".repeat(64)),
            format!("chom_{}é", "0".repeat(62)),
            "x".repeat(100_000),
        ] {
            assert_eq!(Secret::parse(&bad), Err(TokenError::Malformed), "{bad:.80}");
        }
    }

    #[test]
    fn authorization_headers_carry_bearer_tokens() {
        let token = format!("chom_{}", "a".repeat(64));
        for header in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("BEARER   {token}"),
        ] {
            assert_eq!(Secret::from_authorization(&header).unwrap().expose(), token);
        }
        for (header, error) in [
            (format!("Basic {token}"), TokenError::NotBearer),
            (token.clone(), TokenError::NotBearer),
            ("Bearer".to_owned(), TokenError::NotBearer),
            ("Bearer ".to_owned(), TokenError::Malformed),
            (format!("Bearer {token} "), TokenError::Malformed),
            (format!("Bearer\t{token}"), TokenError::NotBearer),
        ] {
            assert_eq!(Secret::from_authorization(&header), Err(error), "{header}");
        }
    }
}
