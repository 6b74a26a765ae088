//! The ledger of ops wins: the record kept per win (`StoredWin`, JSON in the store's
//! `wins` table, whose shape this module owns), loading and saving it, and the running
//! totals of significant, normalised savings per team and per service.
//!
//! In: measured wins, ids, the store. Out: records, `Listing` with totals, the rendered
//! report of a record. Must not: measure (that is `measure`), send mail (that is
//! `outbox`), or count in a total a saving that noise or a change of traffic can
//! explain (a win that is not normalised counts only when the user included it).

use super::{Measured, NewWin, WinsConfig, WinsError};
use crate::model::Reason;
use crate::report::{self, Png, SendState, Win};
use crate::store::ProfileStore;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A win as kept in the ledger (the store holds it as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredWin {
    /// The win and its figures.
    #[serde(flatten)]
    pub win: Win,
    /// Frame pattern given, if any.
    pub frame: Option<String>,
    /// Label filters applied to both sides.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Everyone the report goes to (team list + extra addresses).
    pub recipients: Vec<String>,
    /// The email's state; None when there is nobody to send to.
    pub send: Option<SendState>,
    /// The differential flame graph, PNG as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flame_png: Option<String>,
    /// Why there is no flame graph, if there is none.
    #[serde(default)]
    pub flame_error: Option<String>,
    /// The user asked to count it in the totals although it is not normalised.
    #[serde(default)]
    pub include_in_totals: bool,
}

impl StoredWin {
    /// The record of a measured win, not yet in the store.
    pub fn new(measured: Measured, new: &NewWin, recipients: Vec<String>, send: Option<SendState>) -> StoredWin {
        StoredWin {
            win: measured.win,
            frame: new.frame.clone(),
            labels: new.labels.clone(),
            recipients,
            send,
            flame_png: measured.png.map(|p| base64::engine::general_purpose::STANDARD.encode(p.bytes)),
            flame_error: measured.flame_error,
            include_in_totals: new.include_in_totals,
        }
    }

    /// True when the win counts in the ledger's totals: a significant, normalised
    /// saving on matched windows; or, included explicitly, a per-host saving whose
    /// range excludes zero on matched windows.
    pub fn counted(&self) -> bool {
        let f = &self.win.figures;
        f.counts()
            || (self.include_in_totals
                && !f.normalization.is_normalised()
                && f.matching.complete()
                && f.saving.usd_low > 0.0)
    }

    /// The flame graph, decoded, if there is one.
    pub fn png(&self) -> Option<Png> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.flame_png.as_deref()?).ok()?;
        let (width, height) = png_size(&bytes)?;
        Some(Png { bytes, width, height })
    }

    /// The report, with the image at `image_src` when there is one.
    pub fn rendered(&self, image_src: Option<&str>, config: &WinsConfig) -> report::RenderedReport {
        let url = self.win.id.map(|id| config.viewer_url(id));
        report::render(&self.win, image_src.filter(|_| self.flame_png.is_some()), url.as_deref())
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    Some((word(16)?, word(20)?))
}

fn to_json(record: &StoredWin) -> Result<String, WinsError> {
    serde_json::to_string(record).map_err(|e| WinsError::Corrupt(e.to_string()))
}

/// Keeps a new win in the store (durable when this returns) and gives it its id.
pub fn insert(store: &dyn ProfileStore, record: &mut StoredWin) -> Result<i64, WinsError> {
    let id = store.create_win(&to_json(record)?)?;
    record.win.id = Some(id);
    Ok(id)
}

/// Loads win `id`.
pub fn load(store: &dyn ProfileStore, id: i64) -> Result<StoredWin, WinsError> {
    let json =
        store.win(id)?.ok_or_else(|| WinsError::NotFound(format!("no win {id}: GET /api/v1/wins lists the ledger")))?;
    let mut record: StoredWin =
        serde_json::from_str(&json).map_err(|e| WinsError::Corrupt(format!("stored win {id} does not parse: {e}")))?;
    record.win.id = Some(id);
    Ok(record)
}

/// Saves win `id`.
pub fn save(store: &dyn ProfileStore, id: i64, record: &StoredWin) -> Result<(), WinsError> {
    if store.update_win(id, &to_json(record)?)? {
        Ok(())
    } else {
        Err(WinsError::NotFound(format!("no win {id}")))
    }
}

/// Makes win `id`'s report pending again (to the same recipients), for `Outbox::send`.
pub fn requeue(store: &dyn ProfileStore, id: i64, now: i64) -> Result<StoredWin, WinsError> {
    let mut record = load(store, id)?;
    if record.recipients.is_empty() {
        return Err(WinsError::invalid(
            Reason::BadEmail,
            format!("win {id} has no recipients: its team has no ops_win_list and no emails were given"),
        ));
    }
    record.send = Some(SendState::pending(record.recipients.clone(), now));
    save(store, id, &record)?;
    Ok(record)
}

/// Sums of significant savings.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Total {
    /// Dollars saved per year.
    pub usd_per_year: f64,
    /// Kilograms of CO2 saved per year.
    pub kg_co2_per_year: f64,
    /// CPU cores saved across the fleet.
    pub cores: f64,
    /// Wins counted.
    pub wins: u64,
}

impl Total {
    fn add(&mut self, w: &Win) {
        let s = &w.figures.saving;
        self.usd_per_year += s.usd_per_year;
        self.kg_co2_per_year += s.kg_co2_per_year;
        self.cores += s.cores;
        self.wins += 1;
    }
}

/// The ledger as listed: every win and the running totals (the ripple effect).
#[derive(Debug, Default)]
pub struct Listing {
    /// Every win, newest first, each with its three largest frame changes only.
    pub wins: Vec<StoredWin>,
    /// All counted savings.
    pub total: Total,
    /// Counted savings per team (`(no team)` for wins without one).
    pub by_team: BTreeMap<String, Total>,
    /// Counted savings per service.
    pub by_service: BTreeMap<String, Total>,
    /// Wins listed but not counted (saving not positive, not significant, or not
    /// normalised).
    pub not_counted: u64,
    /// Of the wins not counted, those kept out because they are per host, not
    /// normalised (and not included explicitly).
    pub not_normalised: u64,
}

/// Every win (newest first) and the totals; a stored win that does not parse is left
/// out (and logged) rather than failing the list.
pub fn list(store: &dyn ProfileStore) -> Result<Listing, WinsError> {
    let rows = store.wins()?;
    let mut out = Listing { wins: Vec::with_capacity(rows.len()), ..Listing::default() };
    for (id, json) in rows.into_iter().rev() {
        let mut record: StoredWin = match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(win = id, error = %e, "stored win does not parse; left out of the list");
                continue;
            }
        };
        record.win.id = Some(id);
        // The ripple effect counts only savings that neither noise nor traffic explain.
        if record.counted() {
            out.total.add(&record.win);
            out.by_team
                .entry(record.win.team.clone().unwrap_or_else(|| "(no team)".into()))
                .or_default()
                .add(&record.win);
            out.by_service.entry(record.win.service.clone()).or_default().add(&record.win);
        } else {
            out.not_counted += 1;
            out.not_normalised += u64::from(!record.win.figures.normalization.is_normalised());
        }
        record.win.figures.frames.truncate(3);
        out.wins.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_size_reads_ihdr() {
        let png = report::svg_to_png(r#"<svg xmlns="http://www.w3.org/2000/svg" width="30" height="20"><rect width="30" height="20" fill="red"/></svg>"#)
            .unwrap();
        assert_eq!(png_size(&png.bytes), Some((30, 20)));
        assert_eq!(png_size(b"GIF89a"), None);
    }
}
