//! speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json)
//! to and from `Profile`. Export writes one `sampled` profile per thread state, named
//! `<service> <STATE>`, weights in samples; import reads `sampled` and `evented`
//! profiles, takes the state from a profile name ending in a state name (else
//! RUNNABLE), and turns time weights into samples at the profile's period.

use super::profile::{Profile, ProfileBuilder};
use super::state::ThreadState;
use serde::{Deserialize, Serialize};

/// The `$schema` value speedscope checks.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

/// Why a speedscope file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpeedscopeError {
    #[error("not a speedscope JSON file: {0}")]
    Json(String),
    #[error("frame index {index} out of range: the file has {len} frames")]
    FrameIndex { index: usize, len: usize },
    #[error("profile {profile:?} has {samples} samples but {weights} weights")]
    Weights { profile: String, samples: usize, weights: usize },
    #[error("profile {profile:?}: event at {at} closes frame {frame}, which is not the innermost open frame")]
    Unbalanced { profile: String, at: f64, frame: usize },
    #[error("profile {profile:?}: event type {kind:?} is not O or C")]
    EventType { profile: String, kind: String },
}

/// A speedscope file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// Always `SCHEMA`.
    #[serde(rename = "$schema")]
    pub schema: String,
    /// Frames shared by every profile.
    pub shared: Shared,
    /// The profiles (speedscope shows one at a time).
    pub profiles: Vec<SpeedscopeProfile>,
    /// File name shown by speedscope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool that wrote the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
}

/// The shared frame table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// Frames, referred to by index.
    pub frames: Vec<Frame>,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Function name.
    pub name: String,
    /// Source file, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// One profile: sampled (stacks with weights) or evented (open/close events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SpeedscopeProfile {
    /// Stacks with weights.
    #[serde(rename_all = "camelCase")]
    Sampled {
        /// Profile name.
        name: String,
        /// `none`, `nanoseconds`, `microseconds`, `milliseconds`, `seconds` or `bytes`.
        unit: String,
        /// First value of the range.
        start_value: f64,
        /// Last value of the range.
        end_value: f64,
        /// Stacks as frame indices, root first.
        samples: Vec<Vec<usize>>,
        /// Weight of each stack, in `unit`.
        weights: Vec<f64>,
    },
    /// Frame open/close events on a time line.
    #[serde(rename_all = "camelCase")]
    Evented {
        /// Profile name.
        name: String,
        /// Unit of `at`.
        unit: String,
        /// First value of the range.
        start_value: f64,
        /// Last value of the range.
        end_value: f64,
        /// Events in time order.
        events: Vec<Event>,
    },
}

/// An evented profile's event: frame `frame` opens (`O`) or closes (`C`) at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `O` or `C`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Time, in the profile's unit.
    pub at: f64,
    /// Frame index.
    pub frame: usize,
}

/// Nanoseconds per `unit`, None for units that are not time.
fn nanos_per(unit: &str) -> Option<f64> {
    match unit {
        "nanoseconds" => Some(1.0),
        "microseconds" => Some(1e3),
        "milliseconds" => Some(1e6),
        "seconds" => Some(1e9),
        _ => None,
    }
}

/// Writes `profile` as a speedscope file: one sampled profile per state with samples.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let frames = profile.frames.iter().map(|n| Frame { name: n.clone(), file: None, line: None }).collect();
    let mut profiles = Vec::new();
    for state in ThreadState::ALL {
        let mut samples = Vec::new();
        let mut weights = Vec::new();
        for s in profile.samples.iter().filter(|s| s.state == state && s.count > 0) {
            let Some(stack) = profile.stacks.get(s.stack as usize) else { continue };
            samples.push(stack.iter().map(|f| *f as usize).collect());
            weights.push(s.count as f64);
        }
        if samples.is_empty() {
            continue;
        }
        let total: f64 = weights.iter().sum();
        profiles.push(SpeedscopeProfile::Sampled {
            name: format!("{} {}", profile.service, state.as_str()),
            unit: "none".into(),
            start_value: 0.0,
            end_value: total,
            samples,
            weights,
        });
    }
    let file = File {
        schema: SCHEMA.into(),
        shared: Shared { frames },
        profiles,
        name: Some(profile.service.clone()),
        exporter: Some(concat!("hotframe@", env!("CARGO_PKG_VERSION")).into()),
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// The thread state a profile name ends with (`checkout BLOCKED`), else RUNNABLE.
fn state_of(name: &str) -> ThreadState {
    name.rsplit(' ').next().and_then(|w| w.parse().ok()).unwrap_or(ThreadState::Runnable)
}

/// Adds every profile of a speedscope file to `builder`; time weights become samples
/// of `period_ns`.
pub fn parse_into(bytes: &[u8], period_ns: u64, builder: &mut ProfileBuilder) -> Result<(), SpeedscopeError> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| SpeedscopeError::Json(e.to_string()))?;
    let ids: Vec<u32> = file.shared.frames.iter().map(|f| builder.intern_frame(&f.name)).collect();
    let frame = |index: usize| ids.get(index).copied().ok_or(SpeedscopeError::FrameIndex { index, len: ids.len() });
    let count_of = |unit: &str, value: f64| -> u64 {
        let value = value.max(0.0);
        match nanos_per(unit) {
            Some(ns) => (value * ns / period_ns.max(1) as f64).round() as u64,
            None => value.round() as u64,
        }
    };
    for p in &file.profiles {
        match p {
            SpeedscopeProfile::Sampled { name, unit, samples, weights, .. } => {
                if weights.len() != samples.len() {
                    return Err(SpeedscopeError::Weights {
                        profile: name.clone(),
                        samples: samples.len(),
                        weights: weights.len(),
                    });
                }
                let state = state_of(name);
                for (stack, weight) in samples.iter().zip(weights) {
                    let ids = stack.iter().map(|i| frame(*i)).collect::<Result<Vec<u32>, _>>()?;
                    let id = builder.intern_stack(&ids);
                    builder.add_stack(id, state, count_of(unit, *weight));
                }
            }
            SpeedscopeProfile::Evented { name, unit, events, .. } => {
                let state = state_of(name);
                let mut open: Vec<u32> = Vec::new();
                let mut last_at = events.first().map(|e| e.at).unwrap_or(0.0);
                for e in events {
                    if !open.is_empty() && e.at > last_at {
                        let id = builder.intern_stack(&open);
                        builder.add_stack(id, state, count_of(unit, e.at - last_at));
                    }
                    last_at = e.at;
                    let f = frame(e.frame)?;
                    match e.kind.as_str() {
                        "O" => open.push(f),
                        "C" => {
                            if open.pop() != Some(f) {
                                return Err(SpeedscopeError::Unbalanced {
                                    profile: name.clone(),
                                    at: e.at,
                                    frame: e.frame,
                                });
                            }
                        }
                        other => {
                            return Err(SpeedscopeError::EventType { profile: name.clone(), kind: other.to_string() })
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::folded::to_folded;

    #[test]
    fn round_trip_keeps_states() {
        let mut b = ProfileBuilder::new("svc", 0, 10_000, 10_000_000);
        b.add(&["main", "work", "hot"], ThreadState::Runnable, 7);
        b.add(&["main", "lock"], ThreadState::Blocked, 3);
        let p = b.finish();
        let bytes = encode(&p);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["$schema"], SCHEMA);
        assert_eq!(json["profiles"][0]["type"], "sampled");
        let mut back = ProfileBuilder::new("svc", 0, 10_000, 10_000_000);
        parse_into(&bytes, 10_000_000, &mut back).unwrap();
        let back = back.finish();
        assert_eq!(back.state_totals(), p.state_totals());
        assert_eq!(to_folded(&back, &[]), to_folded(&p, &[]));
    }

    #[test]
    fn evented_time_becomes_samples() {
        let text = r#"{"$schema":"https://www.speedscope.app/file-format-schema.json",
          "shared":{"frames":[{"name":"a"},{"name":"b"}]},
          "profiles":[{"type":"evented","name":"x","unit":"milliseconds","startValue":0,"endValue":50,
            "events":[{"type":"O","frame":0,"at":0},{"type":"O","frame":1,"at":10},{"type":"C","frame":1,"at":40},{"type":"C","frame":0,"at":50}]}]}"#;
        let mut b = ProfileBuilder::new("svc", 0, 1000, 10_000_000);
        parse_into(text.as_bytes(), 10_000_000, &mut b).unwrap();
        assert_eq!(to_folded(&b.finish(), &[]), "a 2\na;b 3\n");
        let bad = text.replace(r#"{"type":"C","frame":1,"at":40}"#, r#"{"type":"C","frame":0,"at":40}"#);
        let mut b = ProfileBuilder::new("svc", 0, 1000, 10_000_000);
        assert!(parse_into(bad.as_bytes(), 10_000_000, &mut b)
            .unwrap_err()
            .to_string()
            .contains("not the innermost open frame"));
    }
}
