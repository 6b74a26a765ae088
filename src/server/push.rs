//! Pyroscope's Connect push API messages (`push.v1` and `types.v1`), defined here with
//! prost derive so that no protoc step is needed, plus the Connect JSON form (camelCase
//! fields, `rawProfile` as base64).
//!
//! In: request bodies (protobuf or JSON). Out: `PushRequest`, or `Series` read under a
//! memory budget. Must not: decode the pprof payloads (ingest does that with the
//! model's codec), or build more than the budget allows.

use base64::Engine;
use serde::Deserialize;

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct PushRequest {
    /// Profiles grouped by series.
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`: one label set and its profiles.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct RawProfileSeries {
    /// Series labels (`service_name`, `__name__`, free labels).
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub labels: Vec<LabelPair>,
    /// Raw pprof profiles of the series.
    #[prost(message, repeated, tag = "2")]
    #[serde(default)]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub value: String,
}

/// `push.v1.RawSample`: one pprof profile (gzip or not).
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct RawSample {
    /// The pprof bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(default, rename = "rawProfile", alias = "raw_profile", deserialize_with = "base64_bytes")]
    pub raw_profile: Vec<u8>,
    /// Client-chosen id of the profile.
    #[prost(string, tag = "2")]
    #[serde(default, rename = "ID", alias = "id")]
    pub id: String,
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    // Protobuf JSON accepts standard and URL-safe alphabets, padded or not.
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| serde::de::Error::custom(format!("rawProfile is not base64: {e}")))
}

/// Encodes bytes as the JSON form expects (standard base64), for clients and tests.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One series of a Push request as ingest needs it: its labels and its raw pprof
/// profiles, borrowed from the body when it is protobuf.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    /// Label pairs as sent.
    pub labels: Vec<(String, String)>,
    /// The raw (gzip or plain) pprof profiles.
    pub raw_profiles: Vec<std::borrow::Cow<'a, [u8]>>,
}

/// Why a Push body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not a valid PushRequest.
    #[error("push request {0}")]
    Malformed(String),
    /// Reading it would take more memory than the request may use.
    #[error(transparent)]
    Budget(#[from] crate::model::ModelError),
}

/// Estimated bytes of a series, a label and a raw-profile reference beyond their text.
const SERIES_COST: usize = 64;
const LABEL_COST: usize = 64;
const RAW_COST: usize = 32;
/// Estimated bytes a JSON object of the request may cost once deserialized.
const JSON_OBJECT_COST: usize = 160;

/// Reads the series of a Push body (protobuf, or Connect JSON when `json`), charging
/// `budget` for what it builds before building it: megabytes of empty series or labels
/// are refused, not materialised. The pprof payloads are not decoded here.
pub fn read_series<'a>(
    plain: &'a [u8],
    json: bool,
    budget: &mut crate::model::pprof::Budget,
) -> Result<Vec<Series<'a>>, PushError> {
    if json {
        // Every object becomes at most one struct; base64 text becomes a String, then bytes.
        budget.charge(json_objects(plain).saturating_mul(JSON_OBJECT_COST).saturating_add(2 * plain.len()))?;
        let request: PushRequest =
            serde_json::from_slice(plain).map_err(|e| PushError::Malformed(format!("JSON: {e}")))?;
        return Ok(request
            .series
            .into_iter()
            .map(|s| Series {
                labels: s.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                raw_profiles: s.samples.into_iter().map(|r| std::borrow::Cow::Owned(r.raw_profile)).collect(),
            })
            .collect());
    }
    use crate::model::wire::{fields, WireError};
    let bad = |e: WireError| PushError::Malformed(format!("protobuf: {e}"));
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| PushError::Malformed("protobuf: a label is not UTF-8".into()))
    };
    // Counted first and charged before anything is built, then built at exact size.
    let count = |msg: &[u8], number: u32| -> Result<usize, PushError> {
        let mut n = 0usize;
        for field in fields(msg) {
            n += usize::from(field.map_err(bad)?.0 == number);
        }
        Ok(n)
    };
    let series_count = count(plain, 1)?;
    budget.charge(series_count.saturating_mul(SERIES_COST))?;
    let mut out = Vec::with_capacity(series_count);
    for field in fields(plain) {
        let (1, series) = field.map_err(bad)? else { continue };
        let series = series.bytes("series").map_err(bad)?;
        let (labels, raws) = (count(series, 1)?, count(series, 2)?);
        budget.charge(labels.saturating_mul(LABEL_COST).saturating_add(raws.saturating_mul(RAW_COST)))?;
        let mut s = Series { labels: Vec::with_capacity(labels), raw_profiles: Vec::with_capacity(raws) };
        for field in fields(series) {
            match field.map_err(bad)? {
                (1, label) => {
                    let (mut name, mut value) = (&[][..], &[][..]);
                    for f in fields(label.bytes("label").map_err(bad)?) {
                        match f.map_err(bad)? {
                            (1, v) => name = v.bytes("label name").map_err(bad)?,
                            (2, v) => value = v.bytes("label value").map_err(bad)?,
                            _ => {}
                        }
                    }
                    budget.charge(name.len() + value.len())?;
                    s.labels.push((text(name)?, text(value)?));
                }
                (2, sample) => {
                    let mut raw = &[][..];
                    for f in fields(sample.bytes("sample").map_err(bad)?) {
                        if let (1, v) = f.map_err(bad)? {
                            raw = v.bytes("raw_profile").map_err(bad)?;
                        }
                    }
                    s.raw_profiles.push(std::borrow::Cow::Borrowed(raw));
                }
                _ => {}
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Objects in a JSON text (`{` outside strings), counted without parsing.
fn json_objects(text: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for &c in text {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if c == b'{' {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn protobuf_and_json_agree() {
        let req = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair { name: "service_name".into(), value: "app".into() }],
                samples: vec![RawSample { raw_profile: vec![1, 2, 250], id: "x1".into() }],
            }],
        };
        let back = PushRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
        let json = format!(
            r#"{{"series":[{{"labels":[{{"name":"service_name","value":"app"}}],"samples":[{{"rawProfile":"{}","ID":"x1"}}]}}]}}"#,
            base64_encode(&[1, 2, 250])
        );
        let from_json: PushRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(from_json, req);
        assert!(serde_json::from_str::<PushRequest>(r#"{"series":[{"samples":[{"rawProfile":"!!"}]}]}"#).is_err());

        let mut budget = crate::model::pprof::Budget::new(1 << 20);
        let proto_bytes = req.encode_to_vec();
        let want = vec![Series {
            labels: vec![("service_name".into(), "app".into())],
            raw_profiles: vec![std::borrow::Cow::Borrowed(&[1u8, 2, 250][..])],
        }];
        assert_eq!(read_series(&proto_bytes, false, &mut budget).unwrap(), want);
        assert_eq!(read_series(json.as_bytes(), true, &mut budget).unwrap(), want);
        assert_eq!(json_objects(br#"{"a":"{\"{","b":[{},{}]}"#), 3);
    }

    #[test]
    fn empty_series_cannot_take_more_than_the_budget() {
        let empty_series = [0x0a, 0x00].repeat(1 << 20);
        let mut budget = crate::model::pprof::Budget::new(1 << 20);
        let err = read_series(&empty_series, false, &mut budget).unwrap_err();
        assert!(matches!(err, PushError::Budget(_)), "{err}");
        let json = format!(r#"{{"series":[{}{{}}]}}"#, "{},".repeat(1 << 16));
        assert!(matches!(read_series(json.as_bytes(), true, &mut budget), Err(PushError::Budget(_))));
    }
}
