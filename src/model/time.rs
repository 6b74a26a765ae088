//! Time arguments as users type them: Unix seconds or milliseconds, `now`, and
//! relative forms such as `now-1h`, `now-15m`, `now-7d`. Also short durations (`10s`).

/// A time or duration argument that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: use Unix seconds or milliseconds, `now`, or `now-<n><s|m|h|d|w>` such as now-1h")]
pub struct BadTime(pub String);

/// Earliest time accepted in a profile window or a query: 2000-01-01T00:00:00Z. Older
/// times are typing mistakes (`until=0`, seconds read as milliseconds), and a window
/// reaching back to them would dilute every cost figure.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// How far past the server's clock a time may lie (clock skew between hosts): one day.
pub const MAX_AHEAD_MS: i64 = 86_400_000;

/// A time outside `[EARLIEST_MS, now + MAX_AHEAD_MS]`, with what it was and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} = {ms} ms is {why}: use a time between 2000-01-01 and one day from now")]
pub struct OutOfRange {
    /// What the time is (`until`, `window start`...).
    pub what: String,
    /// The value, Unix ms.
    pub ms: i64,
    /// `before 2000-01-01` or `more than a day in the future`.
    pub why: &'static str,
}

/// Checks that `ms` lies in `[EARLIEST_MS, now_ms + MAX_AHEAD_MS]`.
pub fn check_range(what: &str, ms: i64, now_ms: i64) -> Result<i64, OutOfRange> {
    let why = if ms < EARLIEST_MS {
        "before 2000-01-01"
    } else if ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        "more than a day in the future"
    } else {
        return Ok(ms);
    };
    Err(OutOfRange { what: what.to_string(), ms, why })
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Parses a duration such as `90`, `10s`, `15m`, `1h`, `7d`, `2w`, `500ms` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, BadTime> {
    let t = text.trim();
    let bad = || BadTime(text.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "w" => 7.0 * 86_400_000.0,
        _ => return Err(bad()),
    };
    Ok((n * mult).round() as i64)
}

/// Parses a point in time relative to `now_ms`. Plain numbers under 1e11 are seconds,
/// larger ones milliseconds.
pub fn parse_time_at(text: &str, now_ms: i64) -> Result<i64, BadTime> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(rest) = t.strip_prefix("now-") {
        return Ok(now_ms.saturating_sub(parse_duration_ms(rest)?));
    }
    if let Some(rest) = t.strip_prefix("now+") {
        return Ok(now_ms.saturating_add(parse_duration_ms(rest)?));
    }
    let n: i64 = t.parse().map_err(|_| BadTime(text.to_string()))?;
    if n < 0 {
        return Err(BadTime(text.to_string()));
    }
    Ok(if n < 100_000_000_000 { n * 1000 } else { n })
}

/// Parses a point in time relative to the current clock.
pub fn parse_time(text: &str) -> Result<i64, BadTime> {
    parse_time_at(text, now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time_at("now", now), Ok(now));
        assert_eq!(parse_time_at("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time_at("now-15m", now), Ok(now - 900_000));
        assert_eq!(parse_time_at("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time_at("1700000000123", now), Ok(1_700_000_000_123));
        assert!(parse_time_at("yesterday", now).is_err());
        assert!(parse_time_at("now-1y", now).is_err());
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_time_at("now+99999999999999999999d", now), Ok(i64::MAX), "saturates instead of overflowing");
    }

    #[test]
    fn range() {
        let now = 1_700_000_000_000;
        assert_eq!(check_range("until", now, now), Ok(now));
        assert_eq!(check_range("until", EARLIEST_MS, now), Ok(EARLIEST_MS));
        assert_eq!(check_range("until", 0, now).unwrap_err().why, "before 2000-01-01");
        let far = check_range("until", i64::MAX, now).unwrap_err();
        assert_eq!(far.why, "more than a day in the future");
        assert!(far.to_string().starts_with("until = 9223372036854775807 ms is more than a day"), "{far}");
        assert!(check_range("from", now + MAX_AHEAD_MS, now).is_ok());
    }
}
