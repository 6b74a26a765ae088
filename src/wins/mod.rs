//! Ops wins in one home: a deployed optimisation measured from the stored profiles
//! per unit of work (`measure`, with request counters from Prometheus: `prometheus`),
//! kept in the ledger with the running totals (`ledger`), and its email
//! report sent in the background with retries (`outbox`, which also holds the mail
//! settings).
//!
//! In: a `NewWin` as the caller received it, the store, the service's pricing (the
//! caller's: stored settings or config file), a `WinsConfig`. Out: `StoredWin` records
//! in the store, the ledger's totals, emails. Must not: speak HTTP (`server::wins` maps
//! `WinsError` to responses), read configuration files, or render a report itself
//! (`report` does, fed with values from here).

pub mod ledger;
pub mod measure;
pub mod outbox;
pub mod prometheus;

pub use ledger::{Listing, StoredWin, Total};
pub use measure::{check_request, measure, Measured, NewWin, SelectionSpec, TimeArg};
pub use outbox::{Outbox, TeamConfig, WinsConfig, WinsSettings};
pub use prometheus::{Prometheus, PrometheusConfig};

use crate::cost::CostContext;
use crate::model::time::BadTime;
use crate::model::Aggregate;
use crate::model::Reason;
use crate::report::{ReportError, SendState};
use crate::store::{ProfileStore, StoreError};

/// Why a win could not be measured, kept or sent. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum WinsError {
    /// The request is not a usable win; `reason` is a short code such as `empty_range`.
    #[error("{message}")]
    Invalid {
        /// Short machine-readable code.
        reason: Reason,
        /// What was wrong and what to do.
        message: String,
    },
    /// No such win, or no such service.
    #[error("{0}")]
    NotFound(String),
    /// A time that does not parse.
    #[error(transparent)]
    Time(#[from] BadTime),
    /// The store failed (or does not know the service).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Computing, rendering or sending the report failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A stored win that does not parse, or one that does not serialize.
    #[error("{0}")]
    Corrupt(String),
    /// Prometheus (the request counter) is unreachable or answered an error.
    #[error("{0}")]
    Prometheus(String),
}

impl WinsError {
    /// An `Invalid` with a reason code.
    pub fn invalid(reason: Reason, message: impl Into<String>) -> WinsError {
        WinsError::Invalid { reason, message: message.into() }
    }
}

/// Measures `new` and, unless it is a dry run, keeps it in the ledger (durable when this
/// returns; the returned record then has its id). Recipients are the team's ops-win
/// list plus the extra addresses; the send is left pending for `Outbox::send`.
/// `price` gives the cost contexts of the before and after aggregates.
pub fn record<E: From<WinsError>>(
    store: &dyn ProfileStore,
    config: &WinsConfig,
    new: &NewWin,
    now: i64,
    price: impl FnOnce(&Aggregate, &Aggregate) -> Result<(CostContext, CostContext), E>,
) -> Result<StoredWin, E> {
    let prometheus = config.prometheus.as_ref().map(Prometheus::new);
    let measured = measure(store, prometheus.as_ref(), new, now, price)?;
    let mut recipients = config.team_list(measured.win.team.as_deref());
    for e in &new.emails {
        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(e.trim())) {
            recipients.push(e.trim().to_string());
        }
    }
    let send = (!recipients.is_empty()).then(|| SendState::pending(recipients.clone(), now));
    let mut record = StoredWin::new(measured, new, recipients, send);
    if !new.dry_run {
        ledger::insert(store, &mut record)?;
    }
    Ok(record)
}
