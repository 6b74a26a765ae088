//! Pyroscope's Connect push API messages (`push.v1` and `types.v1`), defined here with
//! prost derive so that no protoc step is needed, plus the Connect JSON form (camelCase
//! fields, `rawProfile` as base64).
//!
//! In: request bodies (protobuf or JSON). Out: `PushRequest`. Must not: decode the
//! pprof payloads (ingest does that with the model's codec).

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
    }
}
