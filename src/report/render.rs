//! The written report of a win: subject line, HTML body for mail clients (tables and
//! inline CSS only, no stylesheet, no script, no SVG), and a plain-text part with the
//! same content.
//!
//! In: a `Win` (its text, selections and `WinFigures`), where the flame graph image
//! lives (`cid:` in an email, a `data:` URL in a browser), and the viewer link.
//! Out: `RenderedReport`. Must not: send anything or read files; every user-provided
//! string is HTML-escaped here.

use super::figures::{FrameChange, Normalization, WinFigures};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The Content-ID of the flame graph image inside the email.
pub const FLAME_CONTENT_ID: &str = "flamegraph@hotframe";

/// A before or after selection, as the user chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase", tag = "kind")]
pub enum Selection {
    /// A time range.
    Range {
        /// Start, Unix ms (inclusive).
        from_ms: i64,
        /// End, Unix ms (exclusive).
        until_ms: i64,
        /// Label filters of this side only (e.g. `host=a`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    /// The profiles carrying one value of a label (e.g. `version=1.4`), within a range.
    Label {
        /// Label name.
        name: String,
        /// Label value.
        value: String,
        /// Start of the range searched, Unix ms.
        from_ms: i64,
        /// End of the range searched, Unix ms.
        until_ms: i64,
        /// Further label filters of this side only.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
}

fn label_words(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}, ")).collect()
}

impl Selection {
    /// The selection in words, e.g. `2026-11-20 10:00 – 11:00 UTC` or `version=1.4 (...)`.
    pub fn describe(&self) -> String {
        match self {
            Selection::Range { from_ms, until_ms, labels } => {
                format!("{}{}", label_words(labels), utc_range(*from_ms, *until_ms))
            }
            Selection::Label { name, value, from_ms, until_ms, labels } => {
                format!("{name}={value} ({}{})", label_words(labels), utc_range(*from_ms, *until_ms))
            }
        }
    }

    /// The label filters of this side (the label of a label selection included).
    pub fn labels(&self) -> BTreeMap<String, String> {
        match self {
            Selection::Range { labels, .. } => labels.clone(),
            Selection::Label { name, value, labels, .. } => {
                let mut all = labels.clone();
                all.insert(name.clone(), value.clone());
                all
            }
        }
    }

    /// Start of the selection, Unix ms.
    pub fn from_ms(&self) -> i64 {
        match self {
            Selection::Range { from_ms, .. } | Selection::Label { from_ms, .. } => *from_ms,
        }
    }

    /// End of the selection, Unix ms.
    pub fn until_ms(&self) -> i64 {
        match self {
            Selection::Range { until_ms, .. } | Selection::Label { until_ms, .. } => *until_ms,
        }
    }
}

/// A win as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Win {
    /// Ledger id, once stored.
    pub id: Option<i64>,
    /// Service the win is about.
    pub service: String,
    /// One line: what was done ("Cache compiled regexes").
    pub title: String,
    /// What changed and why, free text.
    pub description: String,
    /// Who shipped it.
    pub shipped_by: Option<String>,
    /// The team it is credited to.
    pub team: Option<String>,
    /// The before selection.
    pub before: Selection,
    /// The after selection.
    pub after: Selection,
    /// The measured figures.
    pub figures: WinFigures,
    /// When the win was recorded, Unix ms.
    pub created_ms: i64,
}

/// A rendered report.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedReport {
    /// The email subject (one line, no control characters).
    pub subject: String,
    /// The HTML body.
    pub html: String,
    /// The plain-text body.
    pub text: String,
}

/// `1234567.8` -> `$1,234,568`; negative amounts keep their sign (`-$120`).
pub fn format_usd(usd: f64) -> String {
    let whole = usd.abs().round() as u64;
    let sign = if usd < 0.0 && whole > 0 { "-" } else { "" };
    format!("{sign}${}", thousands(whole))
}

/// A $ amount rounded to three significant figures for the subject: `41312` ->
/// `$41,300`, `987.6` -> `$988`.
pub fn format_usd_rounded(usd: f64) -> String {
    let a = usd.abs();
    if a < 1000.0 {
        return format_usd(usd);
    }
    let step = 10f64.powi(a.log10().floor() as i32 - 2);
    format_usd((usd / step).round() * step)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `12.3456` -> `12.3`, `0.01234` -> `0.0123`: three significant figures, plain.
fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".to_string();
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}

fn kg(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{} t", num(x / 1000.0))
    } else {
        format!("{} kg", num(x))
    }
}

/// A one-line version of user text for a header: control characters become spaces.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn utc_parts(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}", sod / 3600, sod % 3600 / 60))
}

/// `2026-11-20 10:00 UTC`.
pub fn utc(ms: i64) -> String {
    let (day, time) = utc_parts(ms);
    format!("{day} {time} UTC")
}

fn utc_range(from_ms: i64, until_ms: i64) -> String {
    let (d1, t1) = utc_parts(from_ms);
    let (d2, t2) = utc_parts(until_ms);
    if d1 == d2 {
        format!("{d1} {t1} – {t2} UTC")
    } else {
        format!("{d1} {t1} – {d2} {t2} UTC")
    }
}

/// The subject line: `Ops win: <title> in <service> — $41,300/year`, with the verdict
/// when the saving is not normalised, not comparable, not significant or negative.
pub fn subject(win: &Win) -> String {
    let f = &win.figures;
    let s = &f.saving;
    let title = one_line(&win.title);
    let service = one_line(&win.service);
    let usd = format_usd_rounded(s.usd_per_year);
    if !f.normalization.is_normalised() {
        format!(
            "Ops change (per host, not normalised): {title} in {service} — {usd}/year, cannot be told apart from a change of traffic"
        )
    } else if !f.matching.complete() {
        format!("Ops change (not comparable): {title} in {service} — {usd}/year, incomplete coverage")
    } else if !s.significant {
        format!("Ops win (not significant): {title} in {service} — {usd}/year, within the noise")
    } else if s.usd_per_year < 0.0 {
        format!("Ops change: {title} in {service} — costs {}/year more", format_usd_rounded(-s.usd_per_year))
    } else {
        format!("Ops win: {title} in {service} — {usd}/year")
    }
}

/// Renders the report. `image_src` is where the flame graph PNG is found (`cid:...` in
/// an email, a `data:` URL in a browser), `None` when there is no image;
/// `viewer_url` is the link back to the win in the web viewer.
pub fn render(win: &Win, image_src: Option<&str>, viewer_url: Option<&str>) -> RenderedReport {
    RenderedReport { subject: subject(win), html: html(win, image_src, viewer_url), text: text(win, viewer_url) }
}

/// Rows of the before -> after table: (label, before, after).
fn comparison_rows(f: &WinFigures) -> Vec<(String, String, String)> {
    let (b, a) = (&f.before, &f.after);
    let mut rows = vec![
        ("CPU cores, fleet".to_string(), num(b.cores), num(a.cores)),
        ("CPU cores per host".to_string(), num(b.cores_per_host), num(a.cores_per_host)),
    ];
    if f.frame_pattern.is_some() {
        rows.push(("In scope, cores per host".to_string(), num(b.scope_cores_per_host), num(a.scope_cores_per_host)));
    }
    if let (Some(wb), Some(wa)) = (b.work, a.work) {
        rows.push(("Requests (work counted)".to_string(), num(wb), num(wa)));
    }
    if let (Some(rb), Some(ra)) = (b.cpu_ms_per_request, a.cpu_ms_per_request) {
        rows.push(("CPU ms per request".to_string(), num(rb), num(ra)));
    }
    if f.normalization == Normalization::Control {
        rows.push((
            "Share of CPU in scope".to_string(),
            format!("{}%", num(b.scope_share * 100.0)),
            format!("{}%", num(a.scope_share * 100.0)),
        ));
    }
    rows.push(("On-CPU samples".to_string(), thousands(b.cpu_samples), thousands(a.cpu_samples)));
    rows.push((
        "Hosts profiled / fleet".to_string(),
        format!("{} / {}", b.profiled_hosts, b.fleet_hosts),
        format!("{} / {}", a.profiled_hosts, a.fleet_hosts),
    ));
    rows.push((
        "Window per host".to_string(),
        format!("{} s", num(b.window_seconds)),
        format!("{} s", num(a.window_seconds)),
    ));
    rows
}

fn verdict(f: &WinFigures) -> String {
    let s = &f.saving;
    let range = format!("{} to {}", format_usd(s.usd_low), format_usd(s.usd_high));
    if !f.normalization.is_normalised() {
        format!(
            "Per host, not normalised: the change cannot be told apart from a change of traffic, so it is not called significant and the ledger does not count it (per-host 95% range {range} per year)."
        )
    } else if !f.matching.complete() {
        format!(
            "Not comparable: a side has incomplete coverage (see the confounders), so the difference is not called significant (95% range {range} per year)."
        )
    } else if s.significant {
        format!("Significant at 95%: the range {range} per year excludes zero.")
    } else {
        format!(
            "Not significant: the 95% range {range} per year includes zero, so noise could explain the difference. Measure over a longer range before claiming it."
        )
    }
}

/// True for a frame with no self time on either side (a caller of what changed).
fn no_self(fr: &FrameChange) -> bool {
    fr.self_before == 0.0 && fr.self_after == 0.0
}

/// The $ a frame saved by its own CPU, or a dash for a frame that has none.
fn frame_usd(fr: &FrameChange) -> String {
    if no_self(fr) {
        "—".to_string()
    } else {
        format_usd(fr.self_usd_per_year)
    }
}

fn normalization_words(n: Normalization) -> &'static str {
    match n {
        Normalization::Requests => "per request (Prometheus request counter)",
        Normalization::Counter => "per unit of work (the profiles' work counter)",
        Normalization::Control => "against the rest of the service (control)",
        Normalization::None => "per host, not normalised",
    }
}

fn text(win: &Win, viewer_url: Option<&str>) -> String {
    let f = &win.figures;
    let s = &f.saving;
    let mut t = String::new();
    let _ = writeln!(t, "{}", subject(win));
    let _ = writeln!(t, "{}", "=".repeat(60));
    let _ = writeln!(t, "Service: {}", one_line(&win.service));
    if let Some(by) = &win.shipped_by {
        let _ = writeln!(t, "Shipped by: {}", one_line(by));
    }
    if let Some(team) = &win.team {
        let _ = writeln!(t, "Team: {}", one_line(team));
    }
    let _ = writeln!(t, "Recorded: {}", utc(win.created_ms));
    let _ = writeln!(t);
    if !win.description.trim().is_empty() {
        let _ = writeln!(t, "What changed:\n{}\n", win.description.trim());
    }
    let _ = writeln!(
        t,
        "Saving: {} per year, {} CO2 per year ({} cores, {}% less CPU in scope)",
        format_usd(s.usd_per_year),
        kg(s.kg_co2_per_year),
        num(s.cores),
        num(s.relative * 100.0)
    );
    let _ = writeln!(
        t,
        "95% range: {} to {} per year; {} to {} CO2",
        format_usd(s.usd_low),
        format_usd(s.usd_high),
        kg(s.kg_co2_low),
        kg(s.kg_co2_high)
    );
    let _ = writeln!(t, "{}", verdict(f));
    let _ = writeln!(t, "Scope: {}; compared {}.", f.scope, normalization_words(f.normalization));
    let _ = writeln!(t, "Normalisation: {}", f.normalization_reason);
    for c in &f.confounders {
        let _ = writeln!(t, "Confounder: {c}");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Before: {}", win.before.describe());
    let _ = writeln!(t, "After:  {}", win.after.describe());
    for (label, b, a) in comparison_rows(f) {
        let _ = writeln!(t, "  {label:<26} {b:>12} -> {a}");
    }
    let _ = writeln!(t);
    if !f.frames.is_empty() {
        let _ = writeln!(
            t,
            "Top frames that changed (cores per host, before -> after; $ per year saved by the frame's own CPU):"
        );
        for fr in &f.frames {
            let _ = writeln!(
                t,
                "  {}\n      self {} -> {}, total {} -> {}, {}{}",
                fr.name,
                num(fr.self_before),
                num(fr.self_after),
                num(fr.total_before),
                num(fr.total_after),
                frame_usd(fr),
                if fr.significant || no_self(fr) { "" } else { " (within noise)" },
            );
        }
        let _ = writeln!(t);
    }
    for note in &f.notes {
        let _ = writeln!(t, "Note: {note}");
    }
    let _ = writeln!(t, "How it was computed: {}", f.cost.formula);
    let _ = writeln!(t, "Price: {}", f.cost.price_source);
    let _ = writeln!(
        t,
        "CO2: {} W per core, PUE {}, {} kg CO2 per kWh.",
        f.cost.watts_per_core, f.cost.pue, f.cost.kg_co2_per_kwh
    );
    let _ = writeln!(t, "Range: {}", s.method);
    if let Some(url) = viewer_url {
        let _ = writeln!(t, "\nOpen in hotframe: {url}");
    }
    t
}

const FONT: &str = "font-family:Arial,Helvetica,sans-serif;";

fn html(win: &Win, image_src: Option<&str>, viewer_url: Option<&str>) -> String {
    let f = &win.figures;
    let s = &f.saving;
    let (badge_bg, badge) = if !f.normalization.is_normalised() {
        ("#9a6700", "Per host, not normalised")
    } else if !f.matching.complete() {
        ("#9a6700", "Not comparable")
    } else if !s.significant {
        ("#9a6700", "Within noise")
    } else if s.usd_per_year < 0.0 {
        ("#b42318", "Regression")
    } else {
        ("#1a7f37", "Ops win")
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head>\
         <body style=\"margin:0;padding:0;background:#f3f4f6;\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"background:#f3f4f6;\"><tr><td align=\"center\" style=\"padding:24px 8px;\">\
         <table role=\"presentation\" width=\"680\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"width:680px;max-width:100%;background:#ffffff;border:1px solid #d0d7de;\">",
        title = escape(&subject(win))
    );
    // Header.
    let _ = write!(
        h,
        "<tr><td style=\"padding:20px 24px 8px 24px;{FONT}\">\
         <span style=\"display:inline-block;background:{badge_bg};color:#ffffff;font-size:12px;font-weight:bold;padding:3px 8px;border-radius:3px;\">{badge}</span>\
         <h1 style=\"margin:10px 0 4px 0;font-size:22px;line-height:28px;color:#1f2328;\">{title}</h1>\
         <div style=\"font-size:14px;color:#57606a;\">{service}{by}{team} · {when}</div></td></tr>",
        title = escape(&one_line(&win.title)),
        service = escape(&one_line(&win.service)),
        by = win.shipped_by.as_deref().map(|b| format!(" · shipped by {}", escape(&one_line(b)))).unwrap_or_default(),
        team = win.team.as_deref().map(|t| format!(" · team {}", escape(&one_line(t)))).unwrap_or_default(),
        when = escape(&utc(win.created_ms)),
    );
    // The figure.
    let _ = write!(
        h,
        "<tr><td style=\"padding:12px 24px;{FONT}\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"background:#f6f8fa;border:1px solid #d0d7de;\"><tr>\
         <td style=\"padding:14px 16px;{FONT}\"><div style=\"font-size:13px;color:#57606a;\">Saved per year</div>\
         <div style=\"font-size:30px;line-height:36px;font-weight:bold;color:#1f2328;\">{usd}</div>\
         <div style=\"font-size:13px;color:#57606a;\">95% range {low} to {high}</div></td>\
         <td style=\"padding:14px 16px;{FONT}\"><div style=\"font-size:13px;color:#57606a;\">CO2 per year</div>\
         <div style=\"font-size:24px;line-height:36px;font-weight:bold;color:#1f2328;\">{co2}</div>\
         <div style=\"font-size:13px;color:#57606a;\">{cores} cores, {rel}% less CPU in scope</div></td>\
         </tr></table>\
         <p style=\"margin:8px 0 0 0;font-size:13px;color:{vcolor};\">{verdict}</p></td></tr>",
        usd = format_usd(s.usd_per_year),
        low = format_usd(s.usd_low),
        high = format_usd(s.usd_high),
        co2 = kg(s.kg_co2_per_year),
        cores = num(s.cores),
        rel = num(s.relative * 100.0),
        vcolor = if s.significant { "#1a7f37" } else { "#9a6700" },
        verdict = escape(&verdict(f)),
    );
    if !win.description.trim().is_empty() {
        let _ = write!(
            h,
            "<tr><td style=\"padding:8px 24px;{FONT}font-size:14px;line-height:20px;color:#1f2328;\">\
             <div style=\"font-weight:bold;margin-bottom:4px;\">What changed</div>{}</td></tr>",
            escape(win.description.trim()).replace('\n', "<br>")
        );
    }
    // Before -> after.
    let cell = format!("padding:6px 8px;border-bottom:1px solid #eaeef2;{FONT}font-size:13px;");
    let _ = write!(
        h,
        "<tr><td style=\"padding:8px 24px;{FONT}\"><div style=\"font-weight:bold;font-size:14px;margin-bottom:4px;\">Before → after</div>\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\
         <tr><td style=\"{cell}color:#57606a;\"></td><td style=\"{cell}color:#57606a;\">Before<br>{bsel}</td><td style=\"{cell}color:#57606a;\">After<br>{asel}</td></tr>",
        bsel = escape(&win.before.describe()),
        asel = escape(&win.after.describe()),
    );
    for (label, b, a) in comparison_rows(f) {
        let _ = write!(
            h,
            "<tr><td style=\"{cell}\">{label}</td><td style=\"{cell}\">{b}</td><td style=\"{cell}\">{a}</td></tr>"
        );
    }
    let _ = write!(
        h,
        "</table><div style=\"font-size:12px;color:#57606a;margin-top:4px;\">Scope: {}; compared {}.</div>\
         <div style=\"font-size:12px;color:#57606a;margin-top:4px;\">Normalisation: {}</div>",
        escape(&f.scope),
        normalization_words(f.normalization),
        escape(&f.normalization_reason)
    );
    for c in &f.confounders {
        let _ =
            write!(h, "<div style=\"font-size:12px;color:#9a6700;margin-top:4px;\">Confounder: {}</div>", escape(c));
    }
    h.push_str("</td></tr>");
    // Frames.
    if !f.frames.is_empty() {
        let _ = write!(
            h,
            "<tr><td style=\"padding:8px 24px;{FONT}\"><div style=\"font-weight:bold;font-size:14px;margin-bottom:4px;\">Top frames that changed</div>\
             <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\
             <tr><td style=\"{cell}color:#57606a;\">Frame</td><td style=\"{cell}color:#57606a;\">Self cores/host</td><td style=\"{cell}color:#57606a;\">Total cores/host</td><td style=\"{cell}color:#57606a;\" align=\"right\">Saved per year (self)</td></tr>"
        );
        for fr in &f.frames {
            let _ = write!(
                h,
                "<tr><td style=\"{cell}font-family:Menlo,Consolas,monospace;word-break:break-all;\">{name}</td>\
                 <td style=\"{cell}white-space:nowrap;\">{sb} → {sa}</td><td style=\"{cell}white-space:nowrap;\">{tb} → {ta}</td>\
                 <td style=\"{cell}white-space:nowrap;\" align=\"right\">{usd}{noise}</td></tr>",
                name = escape(&fr.name),
                sb = num(fr.self_before),
                sa = num(fr.self_after),
                tb = num(fr.total_before),
                ta = num(fr.total_after),
                usd = frame_usd(fr),
                noise = if fr.significant || no_self(fr) { "" } else { " <span style=\"color:#9a6700;\">(noise)</span>" },
            );
        }
        h.push_str("</table></td></tr>");
    }
    if let Some(src) = image_src {
        let _ = write!(
            h,
            "<tr><td style=\"padding:8px 24px;{FONT}\"><div style=\"font-weight:bold;font-size:14px;margin-bottom:4px;\">Differential flame graph</div>\
             <img src=\"{src}\" width=\"632\" alt=\"Differential flame graph: widths are CPU before, blue is less CPU after, red is more\" style=\"display:block;width:100%;max-width:632px;height:auto;border:1px solid #d0d7de;\">\
             <div style=\"font-size:12px;color:#57606a;margin-top:4px;\">Width: CPU before. Blue: less CPU after the change; red: more.</div></td></tr>",
            src = escape(src)
        );
    }
    if let Some(url) = viewer_url {
        let _ = write!(
            h,
            "<tr><td style=\"padding:12px 24px;{FONT}\"><a href=\"{url}\" style=\"display:inline-block;background:#0969da;color:#ffffff;text-decoration:none;font-size:14px;font-weight:bold;padding:8px 14px;border-radius:4px;\">Open in hotframe</a></td></tr>",
            url = escape(url)
        );
    }
    // How it was computed.
    let _ = write!(h, "<tr><td style=\"padding:12px 24px 20px 24px;{FONT}font-size:12px;line-height:17px;color:#57606a;border-top:1px solid #eaeef2;\">");
    for note in &f.notes {
        let _ = write!(h, "<div>Note: {}</div>", escape(note));
    }
    let _ = write!(
        h,
        "<div>How it was computed: {}</div><div>Price: {}</div><div>CO2: {} W per core, PUE {}, {} kg CO2 per kWh.</div><div>Range: {}</div>",
        escape(&f.cost.formula),
        escape(&f.cost.price_source),
        f.cost.watts_per_core,
        f.cost.pue,
        f.cost.kg_co2_per_kwh,
        escape(&s.method)
    );
    h.push_str("</td></tr></table></td></tr></table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formats() {
        assert_eq!(format_usd(41_312.4), "$41,312");
        assert_eq!(format_usd(-1_234_567.6), "-$1,234,568");
        assert_eq!(format_usd(0.2), "$0");
        assert_eq!(format_usd_rounded(41_312.4), "$41,300");
        assert_eq!(format_usd_rounded(987.6), "$988");
        assert_eq!(format_usd_rounded(1_999_999.0), "$2,000,000");
    }

    #[test]
    fn selections_serialise_in_camel_case() {
        let r = serde_json::to_value(Selection::Range { from_ms: 1, until_ms: 2, labels: BTreeMap::new() }).unwrap();
        assert_eq!(r, serde_json::json!({"kind": "range", "fromMs": 1, "untilMs": 2}));
        let labels = BTreeMap::from([("region".to_string(), "eu".to_string())]);
        let l = Selection::Label { name: "version".into(), value: "1.4".into(), from_ms: 1, until_ms: 2, labels };
        assert!(l.describe().starts_with("version=1.4 (region=eu, 1970-01-01"), "{}", l.describe());
        assert_eq!(l.labels().len(), 2);
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["kind"], "label");
        assert_eq!(serde_json::from_value::<Selection>(v).unwrap(), l);
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc_range(1_700_000_000_000, 1_700_003_600_000), "2023-11-14 22:13 – 23:13 UTC");
    }

    #[test]
    fn one_line_removes_controls_and_escape_is_complete() {
        assert_eq!(one_line("a\r\nBcc: x@evil\tz"), "a Bcc: x@evil z");
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
    }
}
