//! Query-string parameters as a list of pairs, so that repeatable `label.<k>=<v>`
//! filters and unknown Pyroscope parameters pass through one parser.
//!
//! In: the decoded pairs of a query string. Out: typed values or `ApiError`s that name
//! the parameter. Must not: read bodies.

use super::error::{ApiError, Reason};
use crate::model::time::{parse_time_at, BadTime};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use std::collections::BTreeMap;

/// The pairs of a query string, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

/// Extracts the query string; a malformed one is a JSON 400 like every other error.
impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The form decoder turns invalid UTF-8 into U+FFFD silently; a label value must
        // arrive as sent or be refused.
        if let Some(name) = parts.uri.query().and_then(first_non_utf8) {
            return Err(ApiError::bad(
                Reason::BadQuery,
                format!("query parameter {name:?}: percent-encoded bytes are not valid UTF-8"),
            ));
        }
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| ApiError::bad(Reason::BadQuery, format!("query string: {}", e.body_text())))
    }
}

/// The (lossy) name of the first query parameter whose name or value does not
/// percent-decode to UTF-8.
fn first_non_utf8(query: &str) -> Option<String> {
    let decode = |text: &str| -> Vec<u8> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            let escaped = match bytes.get(i..i + 3) {
                Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| (h * 16 + l) as u8),
                _ => None,
            };
            match (escaped, bytes[i]) {
                (Some(byte), _) => {
                    out.push(byte);
                    i += 2;
                }
                (None, b'+') => out.push(b' '),
                (None, b) => out.push(b),
            }
            i += 1;
        }
        out
    };
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name), decode(value));
        (std::str::from_utf8(&name).is_err() || std::str::from_utf8(&value).is_err())
            .then(|| String::from_utf8_lossy(&name).into_owned())
    })
}

impl Params {
    /// The last value of `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or a 400 saying it is required.
    pub fn require(&self, name: &str, reason: Reason) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::bad(reason, format!("query parameter `{name}` is required")))
    }

    /// `label.<k>=<v>` filters.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.0.iter().filter_map(|(k, v)| k.strip_prefix("label.").map(|k| (k.to_string(), v.clone()))).collect()
    }

    /// A time parameter relative to `now_ms`, or `default` when absent.
    pub fn time(&self, name: &str, default: &str, now_ms: i64) -> Result<i64, ApiError> {
        let text = self.get(name).unwrap_or(default);
        parse_time_at(text, now_ms)
            .map_err(|BadTime(t)| ApiError::bad(Reason::BadTime, format!("{name}: {}", BadTime(t))))
    }

    /// A time parameter as `time`, refused unless it lies between 2000-01-01 and one
    /// day after `now_ms` (`until=0`, `until=9223372036854775807`, a `from` in 1970).
    pub fn time_in_range(&self, name: &str, default: &str, now_ms: i64) -> Result<i64, ApiError> {
        Ok(crate::model::time::check_range(name, self.time(name, default, now_ms)?, now_ms)?)
    }

    /// A positive number parameter, or `default` when absent.
    pub fn positive(&self, name: &str, default: f64, reason: Reason) -> Result<f64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(ApiError::bad(reason, format!("{name}={text:?} must be a positive number"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let p = Params(vec![
            ("service".into(), "a".into()),
            ("label.host".into(), "h1".into()),
            ("label.version".into(), "2".into()),
            ("from".into(), "now-1h".into()),
            ("maxNodes".into(), "-3".into()),
        ]);
        assert_eq!(p.get("service"), Some("a"));
        assert_eq!(p.labels().len(), 2);
        assert_eq!(p.time("from", "now", 10_000_000).unwrap(), 10_000_000 - 3_600_000);
        assert_eq!(p.time("until", "now", 5).unwrap(), 5);
        assert!(p.positive("maxNodes", 1.0, Reason::BadMaxNodes).is_err());
        assert!(p.require("nope", Reason::BadRequest).unwrap_err().to_string().contains("`nope`"));
        let now = 1_700_000_000_000;
        assert_eq!(p.time_in_range("from", "now", now).unwrap(), now - 3_600_000);
        let zero = Params(vec![("until".into(), "0".into())]).time_in_range("until", "now", now).unwrap_err();
        assert_eq!(zero.reason(), Reason::BadTime);
        assert!(zero.to_string().contains("until = 0 ms is before 2000-01-01"), "{zero}");
        assert_eq!(first_non_utf8("service=a&label.host=%C3%A9+x&q=%zz"), None);
        assert_eq!(first_non_utf8("service=a&label.host=%FF"), Some("label.host".into()));
        assert_eq!(first_non_utf8("name=app.cpu%7Bhost%3D%C3%28%7D"), Some("name".into()));
    }
}
