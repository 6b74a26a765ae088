//! Ops wins: a deployed optimisation measured from the profiles, written up as an
//! email report and sent over SMTP.
//!
//! In: two `model::Aggregate`s (before, after) with their `cost::CostContext`s, the
//! win's own text (title, description, who shipped it), and an `SmtpConfig`.
//! Out: `WinFigures` (cores before/after, per-frame change, $ and CO2 saved per year
//! with a confidence range), a rendered report (subject, HTML, plain text, the
//! differential flame graph as PNG), and a send outcome kept in a `SendState` that the
//! caller stores.
//! Must not: read the store or any configuration file: it takes values, so it can be
//! tested without a server. The clock is read only by `send_with_retries` (time
//! stamps of attempts, and its backoff sleeps).
//!
//! Pipeline: `figures::compute` -> `flame::differential_png` -> `render::render` ->
//! `mail::build_message` -> `mail::Mailer::send` (driven by `mail::send_with_retries`
//! or by the caller's own scheduler through `SendState`).
//!
//! ## How a win is normalised and its range computed
//! `figures::compute` compares the scope's CPU per unit of work: requests (a Prometheus
//! counter) or the profiles' work counter when both sides count it, else the CPU
//! outside the selection (the control), else nothing (per host: never significant).
//! The samples of a stack are a Poisson count (`n` samples of period `p`: `n*p`
//! seconds, variance `n*p^2`); each side's ratio takes the larger of that variance and
//! the variation between the side's intervals (the ratio estimator), so bursts and mix
//! changes widen the range. The 95% range is the difference of the two ratios ± t·σ,
//! expressed at the after side's work per host, scaled to the fleet (`x H`) and priced
//! with the same linear formula as the saving. A saving whose range includes 0 is
//! flagged *not significant*. With fewer than 30 samples on a side the normal
//! approximation is rough and the figures carry a note saying so. docs/ops-wins.md
//! has the formulas.

pub mod figures;
pub mod flame;
pub mod mail;
pub mod render;

pub use figures::{
    aggregate_of, compute, FrameChange, FramePattern, Interval, Matching, Normalization, Saving, Side, SideFigures,
    WinFigures, WinOptions, WorkSource,
};
pub use flame::{differential_png, differential_svg, svg_to_png, Png};
pub use mail::{
    build_message, parse_mailbox, send_with_retries, Mailer, RetryPolicy, SendState, SendStatus, SmtpConfig,
};
pub use render::{format_usd, format_usd_rounded, one_line, render, RenderedReport, Selection, Win, FLAME_CONTENT_ID};

/// What went wrong while computing, rendering or sending a win. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A side has no on-CPU samples at all.
    #[error("the {side} selection has no on-CPU samples: pick a time range or label value in which the service was profiled")]
    NoSamples {
        /// `before` or `after`.
        side: &'static str,
    },
    /// A side covers no host-seconds, so no rate can be computed.
    #[error("the {side} selection covers no profiled time (window {window_seconds} s on {hosts} hosts): pick a longer range")]
    EmptyWindow {
        /// `before` or `after`.
        side: &'static str,
        /// Window the context reported, seconds.
        window_seconds: f64,
        /// Profiled hosts the context reported.
        hosts: u32,
    },
    /// The frame pattern is not a valid regular expression.
    #[error("frame pattern {pattern:?} is not a valid regular expression: {reason}; write a plain name to match by substring")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// The regex engine's reason.
        reason: String,
    },
    /// The frame pattern matches no frame on either side.
    #[error("frame pattern {0:?} matches no frame in the before or the after profiles: check the spelling, or leave it out to measure the whole service")]
    PatternMatchesNothing(String),
    /// Rendering the flame graph failed.
    #[error("rendering the differential flame graph failed: {0}")]
    Flame(String),
    /// An email address could not be parsed.
    #[error("invalid email address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// Nobody to send to.
    #[error("no recipients: give extra email addresses or set the team's ops_win_list in the config file")]
    NoRecipients,
    /// The SMTP URL cannot be used.
    #[error("invalid SMTP URL {url}: {reason}; use smtp://host:port (plain), smtp://host:587?tls=required (STARTTLS), smtp://host?tls=opportunistic, or smtps://host:465 (TLS)")]
    BadSmtpUrl {
        /// The URL, with any password removed.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The message could not be assembled.
    #[error("building the email failed: {0}")]
    Message(String),
    /// The SMTP exchange failed.
    #[error("sending through {url} failed: {reason}{hint}", hint = if *.permanent { " (the server refused the message; retrying will not help)" } else { "; check that the SMTP server is up and reachable, the send is retried" })]
    Send {
        /// The SMTP URL, with any password removed.
        url: String,
        /// The transport's reason.
        reason: String,
        /// True when the server answered with a permanent (5xx) refusal.
        permanent: bool,
    },
}
