//! Measures a win from the store: the request (`NewWin`) is checked, its before and
//! after selections are resolved against the service's history and aggregated (on-CPU
//! samples only), each side is cut into intervals (for the variation between them),
//! the work done on each side is counted (a Prometheus request counter, else the
//! profiles' work counter), the hosts and their coverage are matched, and `report`
//! turns the two sides into normalised figures and a differential flame graph.
//!
//! In: a `NewWin`, the store, Prometheus if configured, the caller's pricing of an
//! aggregate. Out: `Measured` (the win, its PNG or why there is none). Must not: write
//! to the store, or price a side itself (the caller owns the cost settings).

use super::{Prometheus, WinsError};
use crate::cost::CostContext;
use crate::model::time::parse_time_at;
use crate::model::Aggregate;
use crate::model::Reason;
use crate::model::ThreadState;
use crate::report::{self, FramePattern, Interval, Matching, Png, Selection, Side, Win, WinOptions, WorkSource};
use crate::store::{ProfileStore, Query as StoreQuery, ServiceInfo, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest title accepted, in characters.
const MAX_TITLE: usize = 200;
/// Longest description accepted, in characters.
const MAX_DESCRIPTION: usize = 10_000;
/// Most extra email addresses per win.
const MAX_EMAILS: usize = 50;
/// Longest interval a side is cut into, ms (the "per 10-minute bucket").
const MAX_INTERVAL_MS: i64 = 10 * 60 * 1000;
/// Fewest and most intervals per side (short sides get shorter intervals, long sides
/// longer ones).
const MIN_INTERVALS: i64 = 8;
/// See `MIN_INTERVALS`.
const MAX_INTERVALS: i64 = 48;
/// Most version label values checked one by one.
const MAX_VERSIONS_CHECKED: usize = 64;

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
    /// A PromQL expression counting the requests in a window, `$__range` standing for
    /// its length (needs `[prometheus] url` in the config file).
    #[serde(default)]
    pub requests_query: Option<String>,
    /// Count the win in the ledger's totals even when it is not normalised (per host);
    /// it still has to be a saving whose per-host range excludes zero.
    #[serde(default)]
    pub include_in_totals: bool,
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

fn bad(reason: Reason, message: impl Into<String>) -> WinsError {
    WinsError::invalid(reason, message)
}

/// Checks what needs no store, before anything is measured: the text fields (title,
/// description, who shipped it, team), the extra addresses, and the thread states.
/// Returns nothing: `measure` trims the text it keeps.
pub fn check_request(new: &NewWin) -> Result<(), WinsError> {
    let title = new.title.trim();
    if title.is_empty() {
        return Err(bad(
            Reason::BadTitle,
            "title is empty: say in one line what was done, e.g. \"Cache compiled regexes\"",
        ));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(bad(Reason::BadTitle, format!("title is over {MAX_TITLE} characters: keep it to one line")));
    }
    if new.description.chars().count() > MAX_DESCRIPTION {
        return Err(bad(Reason::BadDescription, format!("description is over {MAX_DESCRIPTION} characters")));
    }
    if new.emails.len() > MAX_EMAILS {
        return Err(bad(Reason::BadEmail, format!("{} extra addresses: at most {MAX_EMAILS}", new.emails.len())));
    }
    for address in &new.emails {
        report::parse_mailbox(address)?;
    }
    for (field, value) in [("shippedBy", &new.shipped_by), ("team", &new.team)] {
        if value.as_deref().is_some_and(|v| v.chars().count() > MAX_TITLE || v.chars().any(char::is_control)) {
            return Err(bad(Reason::BadText, format!("{field} must be one short line")));
        }
    }
    if new.requests_query.as_ref().is_some_and(|q| q.trim().is_empty() || q.len() > MAX_DESCRIPTION) {
        return Err(bad(
            Reason::BadRequestsQuery,
            "requestsQuery must be a PromQL expression (at most 10,000 characters)",
        ));
    }
    if new.states.as_ref().is_some_and(|s| !s.contains(&ThreadState::Runnable)) {
        return Err(bad(
            Reason::BadStates,
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
                Reason::EmptyRange,
                format!("the {side} range is empty: from ({from} ms) must be before until ({until} ms)"),
            ));
        }
        Ok((from, until))
    };
    let labels = spec.labels.clone();
    if let Some(name) = labels.keys().chain(spec.label.iter()).find(|n| !crate::model::profile::valid_label_name(n)) {
        return Err(bad(Reason::BadLabels, format!("{side}: {name:?} is not a label name")));
    }
    match (&spec.label, &spec.value) {
        (Some(name), Some(value)) => {
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Label { name: name.clone(), value: value.clone(), from_ms, until_ms, labels })
        }
        (None, None) => {
            if from_ms.is_none() || until_ms.is_none() {
                return Err(bad(
                    Reason::EmptyRange,
                    format!("the {side} selection needs from and until (a time range), or label and value"),
                ));
            }
            let (from_ms, until_ms) = range(from_ms, until_ms)?;
            Ok(Selection::Range { from_ms, until_ms, labels })
        }
        _ => Err(bad(Reason::BadSelection, format!("{side}: give both label and value, or neither"))),
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

/// One side's extra measurements: its intervals, its work and what its data says.
#[derive(Default)]
struct Extent {
    /// The range the side's profiles are judged against, Unix ms.
    from_ms: i64,
    /// See `from_ms`.
    until_ms: i64,
    /// The side cut into intervals (empty when too short for 3).
    intervals: Vec<Interval>,
    /// Units of work on the side, when counted for all its profiles.
    work: Option<f64>,
}

/// The two sides of a win, checked and aggregated, not yet priced.
struct Sides {
    before: Selection,
    after: Selection,
    pattern: Option<FramePattern>,
    agg_before: Aggregate,
    agg_after: Aggregate,
    ext_before: Extent,
    ext_after: Extent,
    work_source: WorkSource,
    matching: Matching,
    /// Confounders and notes found in the store (versions, a partial work counter).
    confounders: Vec<String>,
    notes: Vec<String>,
}

/// The range a side's coverage is judged against: a range selection's own, a label
/// selection's profiles' span.
fn extent_range(sel: &Selection, agg: &Aggregate) -> (i64, i64) {
    match sel {
        Selection::Range { from_ms, until_ms, .. } => (*from_ms, *until_ms),
        Selection::Label { .. } => (agg.first_ms, agg.last_ms.max(agg.first_ms + 1)),
    }
}

/// Mean profile length of an aggregate, ms (at least 1): the wall time its profiles
/// cover per profile.
fn mean_profile_ms(agg: &Aggregate) -> i64 {
    if agg.profiles == 0 {
        return 1;
    }
    let covered: f64 = agg.coverage.per_host().iter().map(|h| h.seconds()).sum();
    ((covered * 1000.0 / agg.profiles as f64) as i64).max(1)
}

/// The interval length for a side of `length_ms` whose profiles last `profile_ms`: 10
/// minutes, shorter so that a short side still has `MIN_INTERVALS`, but at least two
/// profiles long (an interval must hold a profile of every host); longer (whole 10
/// minutes) so that a long side has at most `MAX_INTERVALS`.
pub fn interval_ms(length_ms: i64, profile_ms: i64) -> i64 {
    let mut step = MAX_INTERVAL_MS.min(length_ms / MIN_INTERVALS).max(2 * profile_ms).max(1);
    if length_ms / step > MAX_INTERVALS {
        let per = (length_ms + MAX_INTERVALS - 1) / MAX_INTERVALS;
        step = (per + MAX_INTERVAL_MS - 1) / MAX_INTERVAL_MS * MAX_INTERVAL_MS;
    }
    step
}

/// Counts work over `[from, until)` of `query`: the request counter when there is one,
/// else the profiles' counter when every profile carries it.
struct WorkCounting<'a> {
    store: &'a dyn ProfileStore,
    prometheus: Option<(&'a Prometheus, &'a str)>,
}

impl WorkCounting<'_> {
    /// The work of `query`'s range; `profiles` is how many profiles it holds.
    fn count(&self, query: &StoreQuery, profiles: u64) -> Result<Option<f64>, WinsError> {
        if let Some((prometheus, expr)) = self.prometheus {
            return prometheus.window_value(expr, query.from_ms, query.until_ms).map(Some);
        }
        let total = self.store.work(query)?;
        Ok((total.profiles > 0 && total.profiles >= profiles).then_some(total.units as f64))
    }
}

impl Sides {
    /// Resolves and checks both selections (the after side must be a different,
    /// non-overlapping one) and aggregates them; a side without profiles is refused.
    /// Then cuts each side into intervals, counts its work, and matches hosts.
    fn select(
        store: &dyn ProfileStore,
        prometheus: Option<&Prometheus>,
        new: &NewWin,
        now: i64,
    ) -> Result<Sides, WinsError> {
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
                    Reason::AfterNotLater,
                    format!(
                        "the after range must start when the before range ends or later: after starts at {a_from} ms, before ends at {b_until} ms"
                    ),
                ));
            }
            _ if before == after => {
                return Err(bad(
                    Reason::AfterNotLater,
                    "before and after select the same profiles: compare two ranges or two label values",
                ));
            }
            _ => {}
        }
        let pattern = new.frame.as_deref().filter(|f| !f.trim().is_empty()).map(FramePattern::parse).transpose()?;
        let requests = new.requests_query.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let prometheus = match (requests, prometheus) {
            (Some(expr), Some(p)) => Some((p, expr)),
            (Some(_), None) => {
                return Err(bad(
                    Reason::NoPrometheus,
                    "requestsQuery needs a Prometheus server: set [prometheus] url in the config file",
                ))
            }
            (None, _) => None,
        };
        let agg_before = store.aggregate(&store_query(&new.service, &new.labels, &before))?;
        let agg_after = store.aggregate(&store_query(&new.service, &new.labels, &after))?;
        for (side, agg) in [("before", &agg_before), ("after", &agg_after)] {
            if agg.profiles == 0 {
                return Err(bad(
                    Reason::NoSamples,
                    format!("the {side} selection has no profiles of {:?}: pick a range or label value in which it was profiled", new.service),
                ));
            }
        }
        let counting = WorkCounting { store, prometheus };
        let mut notes = Vec::new();
        let mut extent = |sel: &Selection, agg: &Aggregate, side: &str| -> Result<Extent, WinsError> {
            let (from_ms, until_ms) = extent_range(sel, agg);
            let query = StoreQuery { from_ms, until_ms, ..store_query(&new.service, &new.labels, sel) };
            let work = counting.count(&query, agg.profiles)?;
            if work.is_none() && prometheus.is_none() {
                let partial = store.work(&query)?;
                if partial.profiles > 0 {
                    notes.push(format!(
                        "Only {} of the {} profiles on the {side} side carry a work counter, so it is not used.",
                        partial.profiles, agg.profiles
                    ));
                }
            }
            let step = interval_ms(until_ms - from_ms, mean_profile_ms(agg));
            let mut intervals = Vec::new();
            if (until_ms - from_ms) / step >= 3 {
                let mut t = from_ms;
                while t < until_ms {
                    let q = StoreQuery { from_ms: t, until_ms: (t + step).min(until_ms), ..query.clone() };
                    let aggregate = store.aggregate(&q)?;
                    let work = match work {
                        Some(_) => counting.count(&q, aggregate.profiles)?,
                        None => None,
                    };
                    intervals.push(Interval { aggregate, work });
                    t += step;
                }
            }
            Ok(Extent { from_ms, until_ms, intervals, work })
        };
        let ext_before = extent(&before, &agg_before, "before")?;
        let ext_after = extent(&after, &agg_after, "after")?;
        let work_source = if prometheus.is_some() { WorkSource::Requests } else { WorkSource::Counter };
        let mut sides = Sides {
            before,
            after,
            pattern,
            agg_before,
            agg_after,
            ext_before,
            ext_after,
            work_source,
            matching: Matching::default(),
            confounders: Vec::new(),
            notes,
        };
        sides.match_hosts();
        sides.versions(store, new, &info)?;
        Ok(sides)
    }

    /// The side query of `sel` over its extent, with one more label.
    fn side_query(new: &NewWin, sel: &Selection, ext: &Extent, label: Option<(&str, &str)>) -> StoreQuery {
        let mut q =
            StoreQuery { from_ms: ext.from_ms, until_ms: ext.until_ms, ..store_query(&new.service, &new.labels, sel) };
        if let Some((k, v)) = label {
            q.labels.insert(k.to_string(), v.to_string());
        }
        q
    }

    /// Which hosts each side has (from the wall time its profiles cover, per host), and
    /// whether each covers its side's whole range: a host whose profiles start late
    /// (start-up, an agent attached late), stop early, or leave over a fifth of their
    /// span uncovered, by more than two profile lengths, is incomplete.
    fn match_hosts(&mut self) {
        let mut present: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let mut incomplete = Vec::new();
        let mut cut_ms = 0;
        for (i, (name, ext, agg)) in
            [("before", &self.ext_before, &self.agg_before), ("after", &self.ext_after, &self.agg_after)]
                .into_iter()
                .enumerate()
        {
            let length = ext.until_ms - ext.from_ms;
            let profile = mean_profile_ms(agg);
            if !ext.intervals.is_empty() {
                cut_ms = cut_ms.max(interval_ms(length, profile));
            }
            let slack = 2 * profile;
            for host in agg.coverage.per_host() {
                let (Some(first), Some(last)) = (host.intervals.first(), host.intervals.last()) else { continue };
                let who = host.host.as_deref().unwrap_or("the service");
                present[i].push(who.to_string());
                let late = first[0] - ext.from_ms;
                if late > slack {
                    incomplete.push(format!(
                        "{who} starts {} s after the {name} range starts (start-up or an agent attached late)",
                        late / 1000
                    ));
                }
                let early = ext.until_ms - last[1];
                if early > slack {
                    incomplete.push(format!("{who} stops {} s before the {name} range ends", early / 1000));
                }
                let span = (last[1] - first[0]) as f64 / 1000.0;
                let gaps = span - host.seconds();
                if gaps * 5.0 > span && gaps * 1000.0 > slack as f64 {
                    incomplete.push(format!(
                        "{who} has no profiles for {} s of the {name} range (gaps between its profiles)",
                        gaps.round()
                    ));
                }
            }
        }
        let [hosts_before, hosts_after] = present;
        let mut differ: Vec<String> =
            hosts_before.iter().filter(|h| !hosts_after.contains(h)).map(|h| format!("{h} (before only)")).collect();
        differ.extend(hosts_after.iter().filter(|h| !hosts_before.contains(h)).map(|h| format!("{h} (after only)")));
        self.matching = Matching {
            hosts_before,
            hosts_after,
            hosts_differ: differ,
            incomplete,
            interval_seconds: cut_ms as f64 / 1000.0,
        };
    }

    /// Names a `version` label value found on both sides (unless the sides are chosen
    /// by version): the change may not separate them.
    fn versions(&mut self, store: &dyn ProfileStore, new: &NewWin, info: &ServiceInfo) -> Result<(), WinsError> {
        let by_version = |s: &Selection| matches!(s, Selection::Label { name, .. } if name == "version");
        let Some(values) = info.labels.get("version") else { return Ok(()) };
        if by_version(&self.before) || by_version(&self.after) || new.labels.contains_key("version") {
            return Ok(());
        }
        let mut both = Vec::new();
        for value in values.iter().take(MAX_VERSIONS_CHECKED) {
            let mut on = [false; 2];
            for (i, (sel, ext)) in
                [(&self.before, &self.ext_before), (&self.after, &self.ext_after)].into_iter().enumerate()
            {
                let q = Sides::side_query(new, sel, ext, Some(("version", value)));
                let step = (q.until_ms - q.from_ms).max(1);
                on[i] = store.timeline(&q, step)?.iter().any(|p| !p.coverage.is_empty());
            }
            if on[0] && on[1] {
                both.push(value.clone());
            }
        }
        if !both.is_empty() {
            self.confounders.push(format!(
                "The version label has {} on both sides: the change may not have been deployed (or was rolled \
                 back) between them.",
                both.join(", ")
            ));
        }
        Ok(())
    }

    /// The figures and the flame graph of the priced sides.
    fn priced(
        self,
        new: &NewWin,
        ctx_before: &CostContext,
        ctx_after: &CostContext,
        now: i64,
    ) -> Result<Measured, WinsError> {
        let Sides {
            before,
            after,
            pattern,
            agg_before,
            agg_after,
            ext_before,
            ext_after,
            work_source,
            matching,
            confounders,
            notes,
        } = self;
        let mut figures = report::compute(
            Side {
                aggregate: &agg_before,
                context: ctx_before,
                work: ext_before.work,
                intervals: &ext_before.intervals,
            },
            Side { aggregate: &agg_after, context: ctx_after, work: ext_after.work, intervals: &ext_after.intervals },
            pattern.as_ref(),
            &WinOptions { work_source, ..WinOptions::default() },
        )?;
        figures.confounders.extend(confounders);
        figures.notes.extend(notes);
        figures.apply_matching(matching);
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

/// Measures the win `new` asks for from the store (and Prometheus, when the win names
/// a request counter): figures and the flame graph (or why there is none). `price` gives the cost contexts of the before and after aggregates;
/// it is called only once both sides are checked and have profiles.
pub fn measure<E: From<WinsError>>(
    store: &dyn ProfileStore,
    prometheus: Option<&Prometheus>,
    new: &NewWin,
    now: i64,
    price: impl FnOnce(&Aggregate, &Aggregate) -> Result<(CostContext, CostContext), E>,
) -> Result<Measured, E> {
    let sides = Sides::select(store, prometheus, new, now)?;
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

    /// Profiles of 10 s on hosts a and b over `[from_s, until_s)`: per profile `hot`
    /// and `cold` samples (Poisson) and `work` requests when given.
    fn write_side(
        store: &dyn ProfileStore,
        rng: &mut fastrand::Rng,
        from_s: i64,
        until_s: i64,
        hot: f64,
        cold: f64,
        work: Option<f64>,
    ) {
        let poisson = |rng: &mut fastrand::Rng, mean: f64| -> u64 {
            // Normal approximation, fine for these means.
            let z = (-2.0 * rng.f64().max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
            (mean + z * mean.sqrt()).round().max(0.0) as u64
        };
        for host in ["a", "b"] {
            let mut t = from_s;
            while t < until_s {
                let mut b =
                    crate::model::ProfileBuilder::new("svc", t * 1000, (t + 10) * 1000, 10_000_000).label("host", host);
                b.add(&["main", "hot"], ThreadState::Runnable, poisson(rng, hot));
                b.add(&["main", "cold"], ThreadState::Runnable, poisson(rng, cold));
                let mut p = b.finish();
                p.work = work.map(|w| poisson(rng, w));
                store.write(&p).unwrap();
                t += 10;
            }
        }
    }

    fn win_of(store: &dyn ProfileStore, before: (i64, i64), after: (i64, i64), frame: Option<&str>) -> Win {
        let new: NewWin = serde_json::from_value(serde_json::json!({
            "service": "svc",
            "title": "t",
            "before": {"from": before.0, "until": before.1},
            "after": {"from": after.0, "until": after.1},
            "frame": frame,
        }))
        .unwrap();
        let price = |b: &Aggregate, a: &Aggregate| -> Result<(CostContext, CostContext), WinsError> {
            let inputs =
                crate::cost::CostSettings { price_per_core_hour: Some(0.05), ..Default::default() }.resolve().unwrap();
            let ctx = |agg: &Aggregate| CostContext::of_aggregate(inputs.clone(), agg);
            Ok((ctx(b), ctx(a)))
        };
        measure(store, None, &new, 10_000_000_000_000, price).unwrap().win
    }

    const T: i64 = 1_700_000_000;

    /// Through the store: the profiles' work counter normalises a halved frame under
    /// 30% more traffic to half its CPU per request, and a pure drop of traffic to no
    /// significant win.
    #[test]
    fn the_work_counter_normalises_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path(), Default::default()).unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        write_side(&store, &mut rng, T, T + 600, 40.0, 80.0, Some(100.0));
        write_side(&store, &mut rng, T + 3600, T + 4200, 26.0, 104.0, Some(130.0));
        write_side(&store, &mut rng, T + 7200, T + 7800, 18.2, 72.8, Some(91.0));
        let halved = win_of(&store, (T, T + 600), (T + 3600, T + 4200), Some("hot"));
        let f = &halved.figures;
        assert_eq!(f.normalization, report::Normalization::Counter);
        assert!((f.saving.relative - 0.5).abs() < 0.1, "{}", f.saving.relative);
        assert!(f.saving.significant && f.matching.complete(), "{f:?}");
        assert_eq!(f.before.intervals, 8);
        assert!((f.before.work.unwrap() - 12_000.0).abs() < 600.0);
        // After -> a 30% lower traffic later: no win, in either scope.
        for frame in [Some("hot"), None] {
            let drop = win_of(&store, (T + 3600, T + 4200), (T + 7200, T + 7800), frame);
            assert_eq!(drop.figures.normalization, report::Normalization::Counter);
            assert!(!drop.figures.saving.significant, "{frame:?}: {:?}", drop.figures.saving);
        }
    }

    /// Ground truth (iii): a before range that includes a start-up (the agents start
    /// 200 s in, their first minute hot) is flagged, not called a regression.
    #[test]
    fn a_start_up_in_the_before_range_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(dir.path(), Default::default()).unwrap();
        let mut rng = fastrand::Rng::with_seed(6);
        write_side(&store, &mut rng, T + 200, T + 260, 200.0, 80.0, None);
        write_side(&store, &mut rng, T + 260, T + 600, 40.0, 80.0, None);
        write_side(&store, &mut rng, T + 3600, T + 4200, 40.0, 80.0, None);
        let w = win_of(&store, (T, T + 600), (T + 3600, T + 4200), Some("hot"));
        let f = &w.figures;
        assert_eq!(f.normalization, report::Normalization::Control);
        assert!(!f.matching.complete(), "{:?}", f.matching);
        assert!(f.matching.incomplete.iter().any(|m| m.contains("start-up")), "{:?}", f.matching);
        assert!(!f.saving.significant);
        let rendered = report::render(&w, None, None);
        assert!(rendered.subject.contains("not comparable"), "{}", rendered.subject);
        assert!(!rendered.html.contains("Regression") && rendered.text.contains("Incomplete coverage"));
    }
}
