//! Measures a win from the store: the request (`NewWin`) is checked, its before and
//! after selections are resolved against the service's history and aggregated (on-CPU
//! samples only), and `report` turns the two sides into figures and a differential
//! flame graph.
//!
//! In: a `NewWin`, the store, the caller's pricing of an aggregate. Out: `Measured` (the
//! win, its PNG or why there is none). Must not: write to the store, or price a side
//! itself (the caller owns the cost settings).

use super::WinsError;
use crate::cost::CostContext;
use crate::model::time::parse_time_at;
use crate::model::ThreadState;
use crate::report::{self, FramePattern, Png, Selection, Side, Win, WinOptions};
use crate::store::{Aggregate, ProfileStore, Query as StoreQuery, ServiceInfo, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest title accepted, in characters.
const MAX_TITLE: usize = 200;
/// Longest description accepted, in characters.
const MAX_DESCRIPTION: usize = 10_000;
/// Most extra email addresses per win.
const MAX_EMAILS: usize = 50;

/// A point in time as sent: Unix seconds or ms as a number, or text (`now-2h`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Unix seconds (under 1e11) or milliseconds.
    Number(i64),
    /// Anything `model::time::parse_time_at` reads.
    Text(String),
}

impl TimeArg {
    fn at(&self, now: i64) -> Result<i64, WinsError> {
        match self {
            TimeArg::Number(n) => Ok(parse_time_at(&n.to_string(), now)?),
            TimeArg::Text(t) => Ok(parse_time_at(t, now)?),
        }
    }
}

/// A before or after selection as sent: a range (`from`, `until`), or a label value
/// (`label`, `value`) within an optional range (default: all the service's history).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSpec {
    /// Range start.
    pub from: Option<TimeArg>,
    /// Range end.
    pub until: Option<TimeArg>,
    /// Label name, for a label selection.
    pub label: Option<String>,
    /// Label value, for a label selection.
    pub value: Option<String>,
    /// Label filters of this side only (the diff view sends them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A win to measure (the body of `POST /api/v1/wins`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWin {
    /// Service the win is about.
    pub service: String,
    /// One line: what was done.
    pub title: String,
    /// What changed and why.
    #[serde(default)]
    pub description: String,
    /// The before selection.
    pub before: SelectionSpec,
    /// The after selection.
    pub after: SelectionSpec,
    /// Frames the win is about: a substring, or `/regex/`.
    #[serde(default)]
    pub frame: Option<String>,
    /// Label filters applied to both sides (e.g. `region`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who shipped it.
    #[serde(default)]
    pub shipped_by: Option<String>,
    /// Team credited; its `ops_win_list` receives the report.
    #[serde(default)]
    pub team: Option<String>,
    /// Extra recipients.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Compute and render only: nothing is stored or sent.
    #[serde(default)]
    pub dry_run: bool,
    /// Thread states the sender was looking at; a win is measured on on-CPU samples,
    /// so this must include RUNNABLE when given.
    #[serde(default)]
    pub states: Option<Vec<ThreadState>>,
}

/// A measured win, not yet kept.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The win and its figures (no id yet).
    pub win: Win,
    /// The differential flame graph, if it could be rendered.
    pub png: Option<Png>,
    /// Why there is no flame graph, if there is none.
    pub flame_error: Option<String>,
}

fn bad(reason: &'static str, message: impl Into<String>) -> WinsError {
    WinsError::invalid(reason, message)
}

/// Checks what needs no store, before anything is measured: the text fields (title,
/// description, who shipped it, team), the extra addresses, and the thread states.
/// Returns nothing: `measure` trims the text it keeps.
pub fn check_request(new: &NewWin) -> Result<(), WinsError> {
    let title = new.title.trim();
    if title.is_empty() {
        return Err(bad("bad_title", "title is empty: say in one line what was done, e.g. \"Cache compiled regexes\""));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(bad("bad_title", format!("title is over {MAX_TITLE} characters: keep it to one line")));
    }
    if new.description.chars().count() > MAX_DESCRIPTION {
        return Err(bad("bad_description", format!("description is over {MAX_DESCRIPTION} characters")));
    }
    if new.emails.len() > MAX_EMAILS {
        return Err(bad("bad_email", format!("{} extra addresses: at most {MAX_EMAILS}", new.emails.len())));
    }
    for address in &new.emails {
        report::parse_mailbox(address)?;
    }
    for (field, value) in [("shippedBy", &new.shipped_by), ("team", &new.team)] {
        if value.as_deref().is_some_and(|v| v.chars().count() > MAX_TITLE || v.chars().any(char::is_control)) {
            return Err(bad("bad_text", format!("{field} must be one short line")));
        }
    }
    if new.states.as_ref().is_some_and(|s| !s.contains(&ThreadState::Runnable)) {
        return Err(bad(
            "bad_states",
            "a win is measured on on-CPU samples: states must include RUNNABLE (or be left out)",
        ));
    }
    Ok(())
}

/// Resolves a selection spec against the service's history.
fn selection(spec: &SelectionSpec, side: &str, info: &ServiceInfo, now: i64) -> Result<Selection, WinsError> {
    let from_ms = spec.from.as_ref().map(|t| t.at(now)).transpose()?;
    let until_ms = spec.until.as_ref().map(|t| t.at(now)).transpose()?;
    let range = |from: Option<i64>, until: Option<i64>| -> Result<(i64, i64), WinsError> {
        let (from, until) = (from.unwrap_or(info.first_ms), until.unwrap_or(info.last_ms + 1));
        if from >= until {
            return Err(bad(
                "empty_range",
                format!("the {side} range is empty: from ({from} ms) must be before until ({until} ms)"),
            ));
        }
        Ok((from, until))
    };
    let labels = spec.labels.clone();
    if let Some(name) = labels.keys().chain(spec.label.iter()).find(|n| !crate::model::profile::valid_label_name(n)) {
        return Err(bad("bad_labels", format!("{side}: {name:?} is not a label name")));
    }
    match (&spec.label, &spec.value) {
        (Some(name), Some(value)) => {
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Label { name: name.clone(), value: value.clone(), from_ms, until_ms, labels })
        }
        (None, None) => {
            if from_ms.is_none() || until_ms.is_none() {
                return Err(bad(
                    "empty_range",
                    format!("the {side} selection needs from and until (a time range), or label and value"),
                ));
            }
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Range { from_ms, until_ms, labels })
        }
        _ => Err(bad("bad_selection", format!("{side}: give both label and value, or neither"))),
    }
}

fn store_query(service: &str, labels: &BTreeMap<String, String>, sel: &Selection) -> StoreQuery {
    let mut labels = labels.clone();
    labels.extend(sel.labels());
    StoreQuery {
        service: service.to_string(),
        profile_type: "cpu".to_string(),
        labels,
        from_ms: sel.from_ms(),
        until_ms: sel.until_ms(),
        states: vec![ThreadState::Runnable],
    }
}

/// The two sides of a win, checked and aggregated, not yet priced.
struct Sides {
    before: Selection,
    after: Selection,
    pattern: Option<FramePattern>,
    agg_before: Aggregate,
    agg_after: Aggregate,
}

impl Sides {
    /// Resolves and checks both selections (the after side must be a different,
    /// non-overlapping one) and aggregates them; a side without profiles is refused.
    fn select(store: &dyn ProfileStore, new: &NewWin, now: i64) -> Result<Sides, WinsError> {
        let info = store
            .services()?
            .into_iter()
            .find(|s| s.name == new.service)
            .ok_or_else(|| StoreError::UnknownService(new.service.clone()))?;
        let before = selection(&new.before, "before", &info, now)?;
        let after = selection(&new.after, "after", &info, now)?;
        match (&before, &after) {
            (
                Selection::Range { until_ms: b_until, labels: b_labels, .. },
                Selection::Range { from_ms: a_from, labels: a_labels, .. },
            ) if a_from < b_until && b_labels == a_labels => {
                return Err(bad(
                    "after_not_later",
                    format!(
                        "the after range must start when the before range ends or later: after starts at {a_from} ms, before ends at {b_until} ms"
                    ),
                ));
            }
            _ if before == after => {
                return Err(bad(
                    "after_not_later",
                    "before and after select the same profiles: compare two ranges or two label values",
                ));
            }
            _ => {}
        }
        let pattern = new.frame.as_deref().filter(|f| !f.trim().is_empty()).map(FramePattern::parse).transpose()?;
        let agg_before = store.aggregate(&store_query(&new.service, &new.labels, &before))?;
        let agg_after = store.aggregate(&store_query(&new.service, &new.labels, &after))?;
        for (side, agg) in [("before", &agg_before), ("after", &agg_after)] {
            if agg.profiles == 0 {
                return Err(bad(
                    "no_samples",
                    format!("the {side} selection has no profiles of {:?}: pick a range or label value in which it was profiled", new.service),
                ));
            }
        }
        Ok(Sides { before, after, pattern, agg_before, agg_after })
    }

    /// The figures and the flame graph of the priced sides.
    fn priced(
        self,
        new: &NewWin,
        ctx_before: &CostContext,
        ctx_after: &CostContext,
        now: i64,
    ) -> Result<Measured, WinsError> {
        let Sides { before, after, pattern, agg_before, agg_after } = self;
        let figures = report::compute(
            Side { aggregate: &agg_before, context: ctx_before, requests: None },
            Side { aggregate: &agg_after, context: ctx_after, requests: None },
            pattern.as_ref(),
            &WinOptions::default(),
        )?;
        let title = format!("{}: {} → {}", new.service, before.describe(), after.describe());
        let (png, flame_error) = match report::differential_png(
            &agg_before,
            ctx_before.host_seconds(),
            &agg_after,
            ctx_after.host_seconds(),
            &title,
        ) {
            Ok(png) => (Some(png), None),
            Err(e) => {
                tracing::warn!(error = %e, "win without a flame graph");
                (None, Some(e.to_string()))
            }
        };
        let win = Win {
            id: None,
            service: new.service.clone(),
            title: new.title.trim().to_string(),
            description: new.description.trim().to_string(),
            shipped_by: new.shipped_by.clone().filter(|s| !s.trim().is_empty()),
            team: new.team.clone().filter(|s| !s.trim().is_empty()),
            before,
            after,
            figures,
            created_ms: now,
        };
        Ok(Measured { win, png, flame_error })
    }
}

/// Measures the win `new` asks for from the store: figures and the flame graph (or why
/// there is none). `price` gives the cost contexts of the before and after aggregates;
/// it is called only once both sides are checked and have profiles.
pub fn measure<E: From<WinsError>>(
    store: &dyn ProfileStore,
    new: &NewWin,
    now: i64,
    price: impl FnOnce(&Aggregate, &Aggregate) -> Result<(CostContext, CostContext), E>,
) -> Result<Measured, E> {
    let sides = Sides::select(store, new, now)?;
    let (ctx_before, ctx_after) = price(&sides.agg_before, &sides.agg_after)?;
    Ok(sides.priced(new, &ctx_before, &ctx_after, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_are_checked() {
        let info = ServiceInfo {
            name: "s".into(),
            profile_types: vec![],
            labels: BTreeMap::new(),
            first_ms: 1_000,
            last_ms: 9_000,
            profiles: 1,
        };
        let spec = |from: Option<i64>, until: Option<i64>, label: Option<&str>, value: Option<&str>| SelectionSpec {
            from: from.map(TimeArg::Number),
            until: until.map(TimeArg::Number),
            label: label.map(String::from),
            value: value.map(String::from),
            labels: BTreeMap::new(),
        };
        let now = 10_000_000_000_000;
        assert_eq!(
            selection(&spec(Some(1_700_000_000), Some(1_700_000_060), None, None), "before", &info, now).unwrap(),
            Selection::Range { from_ms: 1_700_000_000_000, until_ms: 1_700_000_060_000, labels: BTreeMap::new() }
        );
        let label = selection(&spec(None, None, Some("version"), Some("1.4")), "after", &info, now).unwrap();
        assert_eq!(
            label,
            Selection::Label {
                name: "version".into(),
                value: "1.4".into(),
                from_ms: 1_000,
                until_ms: 9_001,
                labels: BTreeMap::new()
            }
        );
        let empty =
            selection(&spec(Some(1_700_000_060), Some(1_700_000_000), None, None), "before", &info, now).unwrap_err();
        assert!(empty.to_string().contains("before range is empty"), "{empty}");
        assert!(selection(&spec(None, None, None, None), "after", &info, now).is_err());
        assert!(selection(&spec(None, None, Some("version"), None), "after", &info, now).is_err());
        assert!(selection(&spec(None, None, Some("bad label"), Some("x")), "after", &info, now).is_err());
    }
}
