//! Time arguments as users type them: Unix seconds or milliseconds, `now`, and
//! relative forms such as `now-1h`, `now-15m`, `now-7d`. Also short durations (`10s`).

/// A time or duration argument that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: use Unix seconds or milliseconds, `now`, or `now-<n><s|m|h|d|w>` such as now-1h")]
pub struct BadTime(pub String);

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
        return Ok(now_ms - parse_duration_ms(rest)?);
    }
    if let Some(rest) = t.strip_prefix("now+") {
        return Ok(now_ms + parse_duration_ms(rest)?);
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
    }
}
