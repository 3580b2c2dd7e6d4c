//! The node's input bounds, in one place, and the checked arithmetic that goes with them.
//!
//! Every value a user can hand the node (admin RPC, CLI, config, rows another program
//! inserted) is checked against these before it is stored or computed with, so no input can
//! overflow a timestamp, wrap a cutoff or make one answer allocate without bound. The numbers
//! are stated in the README ("What the node guarantees"); change them there too.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The longest duration accepted anywhere (delays, `older_than`, timeouts): 10 years.
/// Longer is a typo, not a plan, and 10 years from now is far inside every timestamp type
/// the stores use.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The longest job timeout accepted: one week. A job that needs longer is not one job.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most attempts a job may be given (per job or per policy).
pub const MAX_ATTEMPTS: u32 = 1_000;

/// The largest job payload accepted through the admin RPC, in bytes (a request line is at
/// most 1 MiB, so a payload can never be larger there anyway).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The longest unique key, in characters.
pub const MAX_UNIQUE_KEY_CHARS: usize = 255;

/// The most rows one listing (`jobs.list`, `failed.list`, ...) returns.
pub const MAX_LIST_LIMIT: u32 = 1_000;

/// The longest error text the node stores for a job (`last_error`, `failed_jobs.exception`),
/// in bytes: 16 KiB. A handler's error (a command's stderr, say) is cut to this at write time,
/// so one failing job cannot grow every answer and row that repeats its error.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// How much of a payload or an error one row of a listing (`jobs.list`, `failed.list`)
/// carries, in bytes: 2 KiB; the row says when it was cut, and `jobs show` gives the whole.
pub const PREVIEW_BYTES: usize = 2 * 1024;

/// The longest prefix of `s` that is at most `max_bytes` long and ends on a character
/// boundary (so the cut never splits a UTF-8 sequence).
pub fn cut_at_char_boundary(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest id or name that ends up in metric labels and actor paths (server ids, queue
/// names, health check names, job kinds), in characters.
pub const MAX_ID_CHARS: usize = 64;

/// The longest host name (DNS limits a name to 253 characters).
pub const MAX_HOST_CHARS: usize = 253;

/// The longest tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The longest API token name, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;

/// The most tokens a tenant may hold that are not revoked: enough for every client and
/// rotation, few enough that one listing shows them all.
pub const MAX_ACTIVE_TOKENS: u32 = 100;

/// The most jobs one batch enqueue (`jobs.enqueue_many`, one transaction) takes: a
/// transaction of this size commits in tens of milliseconds, and the RPC's line limit
/// (1 MiB) bounds the bytes anyway.
pub const MAX_ENQUEUE_BATCH: usize = 5_000;

/// The largest capacity a server may be given (`max_sites`): far above what one VPS holds,
/// low enough that a typo (an extra zero or three) is caught.
pub const MAX_SITES_PER_SERVER: u32 = 100_000;

/// The most tokens one listing (`tenants.tokens`) returns: the active ones first, then the
/// most recently revoked.
pub const MAX_TOKENS_LISTED: u32 = 1_000;

/// The earliest timestamp the node stores or reads back as itself: the Unix epoch.
pub fn min_time() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest timestamp the node stores or reads back as itself: 9999-12-31T23:59:59Z
/// (what every store and every RFC 3339 printer can represent).
pub fn max_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).expect("9999-12-31T23:59:59Z is representable")
}

/// A timestamp read from a row another program wrote, brought into the range above: a job
/// "available" in the year 200000 is shown and scheduled as 9999-12-31 instead of breaking
/// every listing and claim that reads it.
pub fn clamp_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.clamp(min_time(), max_time())
}

/// Unix milliseconds (as SQLite stores timestamps) to a timestamp, clamped to the range
/// above; never fails.
pub fn time_from_millis(ms: i64) -> DateTime<Utc> {
    let max = max_time().timestamp_millis();
    let ms = ms.clamp(0, max);
    DateTime::from_timestamp_millis(ms).expect("clamped to the representable range")
}

/// An input outside the node's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A duration that does not parse.
    #[error("`{what}`: {message}")]
    BadDuration {
        /// The parameter or key.
        what: String,
        /// Why it does not parse.
        message: String,
    },
    /// A value above its maximum.
    #[error("`{what}` must be at most {max}, got {got}")]
    TooLarge {
        /// The parameter or key.
        what: String,
        /// The bound, as shown to the user.
        max: String,
        /// The value given, as shown to the user.
        got: String,
    },
    /// A value below its minimum.
    #[error("`{what}` must be at least {min}, got {got}")]
    TooSmall {
        /// The parameter or key.
        what: String,
        /// The bound, as shown to the user.
        min: String,
        /// The value given, as shown to the user.
        got: String,
    },
    /// Text with characters it may not hold.
    #[error("`{what}` {message}")]
    BadText {
        /// The parameter or key.
        what: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A duration as the bounds are stated: whole days as days (`3650days`, not humantime's
/// `9years 11months 27days 21h 50m 24s`, since its year is 365.25 days), anything else as
/// humantime prints it. Either form parses back with humantime.
pub fn show_duration(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    if d.subsec_nanos() == 0 && d.as_secs() >= DAY && d.as_secs().is_multiple_of(DAY) {
        format!("{}days", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn show(d: Duration) -> String {
    show_duration(d)
}

/// Check a duration against `max` (inclusive).
pub fn check_duration(what: &str, d: Duration, max: Duration) -> Result<Duration, LimitError> {
    if d > max {
        return Err(LimitError::TooLarge {
            what: what.to_owned(),
            max: show(max),
            got: show(d),
        });
    }
    Ok(d)
}

/// Parse a humantime duration (`"30s"`, `"7days"`) and check it against `max`. Never
/// panics, whatever the text (humantime itself rejects values past `u64` seconds).
pub fn parse_duration(what: &str, text: &str, max: Duration) -> Result<Duration, LimitError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| LimitError::BadDuration {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    check_duration(what, d, max)
}

/// `now - older_than`, for "older than" cutoffs given by a user: refused (instead of
/// wrapping or panicking) when `older_than` is above [`MAX_DURATION`].
pub fn cutoff_before(
    now: DateTime<Utc>,
    what: &str,
    older_than: Duration,
) -> Result<DateTime<Utc>, LimitError> {
    let d = check_duration(what, older_than, MAX_DURATION)?;
    Ok(saturating_before(now, d))
}

/// `now + d` for durations the node already checked (config values, its own retry delays):
/// never panics, and lands at [`max_time`] at the latest. Inputs are refused with
/// [`check_duration`] first; this is the guard behind that check, not a substitute for it.
pub fn saturating_after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .map_or_else(max_time, |t| t.min(max_time()))
}

/// `now - d` for durations the node already checked: never panics, and lands at
/// [`min_time`] at the earliest, so "older than d" then matches nothing rather than
/// everything.
pub fn saturating_before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|delta| now.checked_sub_signed(delta))
        .map_or_else(min_time, |t| t.max(min_time()))
}

/// Check a count against `min..=max`.
pub fn check_count(what: &str, n: u64, min: u64, max: u64) -> Result<u64, LimitError> {
    if n < min {
        return Err(LimitError::TooSmall {
            what: what.to_owned(),
            min: min.to_string(),
            got: n.to_string(),
        });
    }
    if n > max {
        return Err(LimitError::TooLarge {
            what: what.to_owned(),
            max: max.to_string(),
            got: n.to_string(),
        });
    }
    Ok(n)
}

/// Check free text (a unique key, a name): at most `max_chars` characters (not bytes), not
/// empty, and no control characters (NUL, newlines, ANSI escapes), which no store, log line
/// or terminal should receive.
pub fn check_text(what: &str, value: &str, max_chars: usize) -> Result<(), LimitError> {
    let bad = |message: String| LimitError::BadText {
        what: what.to_owned(),
        message,
    };
    if value.is_empty() {
        return Err(bad("must not be empty".to_owned()));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(bad(format!(
            "must be at most {max_chars} characters, got {chars}"
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(bad(format!(
            "must not contain control characters (found {:?})",
            c
        )));
    }
    Ok(())
}

/// Text for a terminal: control characters (ESC, newlines, NUL, ...) are shown escaped
/// (`\u{1b}`, `\n`), so a stored name can never move the cursor, recolour the screen or fake
/// another line. Borrowed when there is nothing to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_past_the_maximum_are_refused_not_wrapped() {
        let now = Utc::now();
        let huge = humantime::parse_duration("300000000years").unwrap();
        assert!(matches!(
            cutoff_before(now, "older_than", huge),
            Err(LimitError::TooLarge { .. })
        ));
        assert!(check_duration("delay", huge, MAX_DURATION).is_err());
        assert!(parse_duration("delay", "10000000years", MAX_DURATION).is_err());
        assert!(parse_duration("delay", "99999999999999999999years", MAX_DURATION).is_err());
        assert_eq!(
            parse_duration("delay", "30s", MAX_DURATION).unwrap(),
            Duration::from_secs(30)
        );
        let week_ago = cutoff_before(now, "older_than", Duration::from_secs(7 * 86400)).unwrap();
        assert_eq!((now - week_ago).num_days(), 7);
    }

    #[test]
    fn text_is_counted_in_characters_and_control_characters_are_refused() {
        assert!(check_text("name", "ééé", 3).is_ok());
        assert!(check_text("name", "éééé", 3).is_err());
        assert!(check_text("name", "a\nb", 10).is_err());
        assert!(check_text("name", "a\u{1b}[31mb", 10).is_err());
        assert!(check_text("name", "a\0b", 10).is_err());
        assert!(check_text("name", "", 10).is_err());
    }

    #[test]
    fn bounds_are_shown_in_days() {
        assert_eq!(show_duration(MAX_DURATION), "3650days");
        assert_eq!(show_duration(MAX_JOB_TIMEOUT), "7days");
        assert_eq!(show_duration(Duration::from_secs(90)), "1m 30s");
        let e = check_duration("delay", Duration::from_secs(3651 * 86400), MAX_DURATION);
        assert_eq!(
            e.unwrap_err().to_string(),
            "`delay` must be at most 3650days, got 3651days"
        );
    }

    #[test]
    fn escaping_shows_control_characters() {
        assert_eq!(escape_control("plain"), "plain");
        assert_eq!(escape_control("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
    }

    #[test]
    fn cuts_never_split_a_character() {
        assert_eq!(cut_at_char_boundary("abc", 5), "abc");
        assert_eq!(cut_at_char_boundary("abc", 2), "ab");
        // "é" is two bytes: a cut in its middle keeps the text before it.
        assert_eq!(cut_at_char_boundary("aé", 2), "a");
        assert_eq!(cut_at_char_boundary("ééé", 5), "éé");
        assert_eq!(cut_at_char_boundary("€", 0), "");
    }

    #[test]
    fn stored_times_are_clamped_into_range() {
        assert_eq!(time_from_millis(i64::MAX), max_time());
        assert_eq!(time_from_millis(-5), min_time());
        assert_eq!(time_from_millis(1_000).timestamp_millis(), 1_000);
    }

    proptest! {
        #[test]
        fn cutoffs_and_deadlines_never_panic_and_stay_in_range(secs in any::<u64>(), offset in -1_000_000_000i64..1_000_000_000i64) {
            let now = DateTime::from_timestamp(1_800_000_000 + offset, 0).unwrap();
            let d = Duration::from_secs(secs);
            match cutoff_before(now, "older_than", d) {
                Ok(t) => prop_assert!(t <= now && t >= min_time()),
                Err(_) => prop_assert!(d > MAX_DURATION),
            }
            match check_duration("delay", d, MAX_DURATION).map(|d| saturating_after(now, d)) {
                Ok(t) => prop_assert!(t >= now && t <= max_time()),
                Err(_) => prop_assert!(d > MAX_DURATION),
            }
        }

        #[test]
        fn saturating_arithmetic_never_panics(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let now = Utc::now();
            let d = Duration::new(secs, nanos);
            let after = saturating_after(now, d);
            let before = saturating_before(now, d);
            prop_assert!(after >= now && after <= max_time());
            prop_assert!(before <= now && before >= min_time());
        }

        #[test]
        fn millis_always_decode(ms in any::<i64>()) {
            let t = time_from_millis(ms);
            prop_assert!(t >= min_time() && t <= max_time());
        }
    }
}
