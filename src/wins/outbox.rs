//! The outbox of ops-win reports: mail settings (`[smtp]`, `[teams.NAME]`, `[wins]` in
//! the config file; `--smtp-url`, `--mail-from`, `--public-url`), and sending in the
//! background with retries (exponential backoff, full jitter, limited attempts).
//!
//! In: win ids whose send state is pending. Out: emails, and the send state written
//! back to the win after every attempt, so a pending send survives a restart
//! (`Outbox::resume_pending` picks it up). Must not: send one win from two tasks at
//! once (the `Outbox` value, one per server, knows which wins have a task; servers that
//! share a PostgreSQL store claim each attempt in the store first), or lose a win
//! whatever the SMTP server does.

use super::ledger::{load, save};
use super::prometheus::PrometheusConfig;
use super::WinsError;
use crate::model::time::now_ms;
use crate::report::{self, Mailer, RetryPolicy, SendStatus, SmtpConfig};
use crate::store::{ProfileStore, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A team's settings in the config file (`[teams.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// Where the team's ops-win reports go.
    #[serde(default)]
    pub ops_win_list: Vec<String>,
}

/// `[wins]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WinsSettings {
    /// Base URL of this server as readers reach it, for the link in the email.
    pub public_url: Option<String>,
    /// How failed sends are retried.
    pub retry: RetryPolicy,
}

/// Everything the ledger needs to send reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WinsConfig {
    /// The SMTP server; None: wins are kept, their sends wait for one.
    pub smtp: Option<SmtpConfig>,
    /// Teams and their ops-win lists.
    pub teams: BTreeMap<String, TeamConfig>,
    /// Base URL of the viewer for links (default: a path relative to the server).
    pub public_url: Option<String>,
    /// Retries of a failed send.
    pub retry: RetryPolicy,
    /// The Prometheus server request counters are read from (`[prometheus]`).
    pub prometheus: Option<PrometheusConfig>,
}

impl WinsConfig {
    /// Checks the file's `[smtp]`, `[teams.*]` and `[wins]` sections.
    pub fn new(
        smtp: Option<SmtpConfig>,
        teams: BTreeMap<String, TeamConfig>,
        settings: WinsSettings,
    ) -> Result<WinsConfig, String> {
        WinsConfig { smtp, teams, public_url: settings.public_url, retry: settings.retry, prometheus: None }.checked()
    }

    /// Adds the file's `[prometheus]` section.
    pub fn with_prometheus(mut self, prometheus: Option<PrometheusConfig>) -> Result<WinsConfig, String> {
        if let Some(p) = &prometheus {
            p.check()?;
        }
        self.prometheus = prometheus;
        Ok(self)
    }

    /// Applies the `serve` flags, which win over the file.
    pub fn with_flags(
        mut self,
        smtp_url: Option<&str>,
        mail_from: Option<&str>,
        public_url: Option<&str>,
    ) -> Result<WinsConfig, String> {
        if let Some(url) = smtp_url {
            let mut smtp = self.smtp.take().unwrap_or_else(|| SmtpConfig {
                url: String::new(),
                from: "hotframe <hotframe@localhost>".to_string(),
                username: None,
                password: None,
                timeout_secs: None,
                ca_file: None,
            });
            smtp.url = url.to_string();
            self.smtp = Some(smtp);
        }
        if let Some(from) = mail_from {
            match self.smtp.as_mut() {
                Some(smtp) => smtp.from = from.to_string(),
                None => {
                    return Err(
                        "--mail-from needs an SMTP server: give --smtp-url too (or [smtp] in the config file)".into()
                    )
                }
            }
        }
        if let Some(url) = public_url {
            self.public_url = Some(url.to_string());
        }
        self.checked()
    }

    fn checked(self) -> Result<WinsConfig, String> {
        if let Some(smtp) = &self.smtp {
            Mailer::new(smtp).map_err(|e| format!("[smtp]: {e}"))?;
        }
        for (name, team) in &self.teams {
            for address in &team.ops_win_list {
                report::parse_mailbox(address).map_err(|e| format!("[teams.{name}] ops_win_list: {e}"))?;
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("public_url {url:?} must start with http:// or https://"));
            }
        }
        if self.retry.max_attempts == 0 {
            return Err("[wins.retry] max_attempts must be at least 1".into());
        }
        Ok(self)
    }

    /// The ops-win list of `team` (empty for no team or a team without a list).
    pub fn team_list(&self, team: Option<&str>) -> Vec<String> {
        team.and_then(|t| self.teams.get(t)).map(|t| t.ops_win_list.clone()).unwrap_or_default()
    }

    /// The viewer's page of win `id`.
    pub fn viewer_url(&self, id: i64) -> String {
        format!("{}/wins/{id}", self.public_url.as_deref().unwrap_or("").trim_end_matches('/'))
    }
}

/// Win ids with a send task running, shared by the clones of one `Outbox`, each with
/// whether a send was asked for again while the task ran.
type RunningSet = Arc<Mutex<BTreeMap<i64, bool>>>;

fn lock_set(set: &RunningSet) -> std::sync::MutexGuard<'_, BTreeMap<i64, bool>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds a win's place in the running set while its send task lives.
struct Running {
    set: RunningSet,
    id: i64,
    /// Given up by `again` already: the drop must not free a place a new task may hold.
    released: bool,
}

impl Running {
    /// The place of win `id`, or None when a task already holds it (that task is then
    /// told to look at the win again before it ends). The lock is released before a
    /// guard exists, so no guard is ever dropped under it.
    fn claim(set: &RunningSet, id: i64) -> Option<Running> {
        {
            let mut running = lock_set(set);
            if let Some(again) = running.get_mut(&id) {
                *again = true;
                return None;
            }
            running.insert(id, false);
        }
        Some(Running { set: set.clone(), id, released: false })
    }

    /// Called by the task when it has nothing more to do: true (the place kept) when a
    /// send was asked for while it ran, else the place is given up, under one lock so
    /// that no request falls between the two.
    fn again(&mut self) -> bool {
        let mut running = lock_set(&self.set);
        match running.get_mut(&self.id) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                running.remove(&self.id);
                self.released = true;
                false
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.released {
            lock_set(&self.set).remove(&self.id);
        }
    }
}

/// Sends ops-win reports in the background, at most one task per win. One per server
/// (held by its state); clones share the store, the settings and the running set.
#[derive(Clone)]
pub struct Outbox {
    /// Where the wins and their send states are kept.
    store: Arc<dyn ProfileStore>,
    /// SMTP, recipients' lists, links and retries.
    config: Arc<WinsConfig>,
    /// Wins with a send task running.
    running: RunningSet,
    /// Who this server is when it claims a send in a store shared with other servers.
    owner: Arc<str>,
}

/// How long a claimed send stays this server's: longer than any SMTP exchange, short
/// enough that another server takes over soon after this one dies mid-send.
const SEND_LEASE_MS: i64 = 120_000;
/// How long a server waits before looking again at a send another server holds.
const CLAIMED_ELSEWHERE_WAIT: Duration = Duration::from_secs(5);

impl Outbox {
    /// The outbox of the wins in `store`, sent with `config`.
    pub fn new(store: Arc<dyn ProfileStore>, config: WinsConfig) -> Outbox {
        let owner = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        Outbox { store, config: Arc::new(config), running: RunningSet::default(), owner: owner.into() }
    }

    /// True while a task sends (or waits to retry) win `id`'s report.
    pub fn is_sending(&self, id: i64) -> bool {
        lock_set(&self.running).contains_key(&id)
    }

    /// Starts sending win `id` in the background, unless a task already does (it then
    /// looks at the win again before it ends, so a send asked for as it finishes is not
    /// lost). Returns at once either way. Needs a tokio runtime.
    pub fn send(&self, id: i64) {
        let Some(mut running) = Running::claim(&self.running, id) else { return };
        let outbox = self.clone();
        tokio::spawn(async move {
            loop {
                let this = outbox.clone();
                match tokio::task::spawn_blocking(move || this.attempt(id)).await {
                    Ok(Ok(Some(wait))) => tokio::time::sleep(wait).await,
                    Ok(Ok(None)) if running.again() => {}
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => {
                        tracing::warn!(win = id, error = %e, "cannot update the win's send state; it is retried at the next start");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(win = id, error = %e, "send task failed; it is retried at the next start");
                        return;
                    }
                }
            }
        });
    }

    /// One step of win `id`'s send, claimed in the store first (with several servers on
    /// one store, only the holder of the claim reads the send state and sends; the
    /// others look again later and find it sent). Returns the wait before the next step,
    /// or None when there is nothing more to do.
    fn attempt(&self, id: i64) -> Result<Option<Duration>, WinsError> {
        let store = self.store.as_ref();
        match store.claim_win_send(id, &self.owner, now_ms(), SEND_LEASE_MS) {
            Ok(true) => {}
            Ok(false) => return Ok(Some(crate::upload::jittered(CLAIMED_ELSEWHERE_WAIT, 0.2))),
            // A shared database that is restarting: look again later, the send stays pending.
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(win = id, error = %e, "cannot claim the report's send; retrying");
                return Ok(Some(crate::upload::jittered(CLAIMED_ELSEWHERE_WAIT, 0.2)));
            }
            Err(e) => return Err(e.into()),
        }
        let result = self.attempt_claimed(id);
        if let Err(e) = store.release_win_send(id, &self.owner) {
            tracing::warn!(win = id, error = %e, "cannot release the claim on the send; it expires by itself");
        }
        result
    }

    /// `attempt` once this server holds the claim.
    fn attempt_claimed(&self, id: i64) -> Result<Option<Duration>, WinsError> {
        let store = self.store.as_ref();
        let mut record = load(store, id)?;
        let Some(send) = record.send.as_ref() else { return Ok(None) };
        if send.status != SendStatus::Pending {
            return Ok(None);
        }
        let now = now_ms();
        if let Some(next) = send.next_attempt_ms.filter(|next| *next > now) {
            return Ok(Some(Duration::from_millis((next - now) as u64)));
        }
        let config = self.config.as_ref();
        let Some(smtp) = &config.smtp else {
            if let Some(send) = record.send.as_mut() {
                send.last_error = Some(
                    "no SMTP server is configured: start hotframe serve with --smtp-url (or [smtp] in the config file); \
                     pending reports are sent when it starts"
                        .to_string(),
                );
            }
            save(store, id, &record)?;
            return Ok(None);
        };
        let outcome = Mailer::new(smtp).and_then(|mailer| {
            let rendered = record.rendered(Some(&format!("cid:{}", report::FLAME_CONTENT_ID)), config);
            let message = report::build_message(mailer.from(), &record.recipients, &rendered, record.png().as_ref())?;
            mailer.send(&message)
        });
        let Some(send) = record.send.as_mut() else { return Ok(None) };
        let wait = send.record(&outcome, now_ms(), &config.retry);
        match (&outcome, wait) {
            (Ok(()), _) => tracing::info!(win = id, recipients = record.recipients.len(), "ops-win report sent"),
            (Err(e), Some(wait)) => {
                tracing::warn!(win = id, attempts = send.attempts, wait_ms = wait.as_millis() as u64, error = %e, "ops-win report not sent; retrying")
            }
            (Err(e), None) => {
                tracing::warn!(win = id, attempts = send.attempts, error = %e, "ops-win report not sent; giving up")
            }
        }
        save(store, id, &record)?;
        Ok(wait)
    }

    /// Starts a send task for every win whose report is still pending (after a restart).
    pub async fn resume_pending(self) {
        let store = self.store.clone();
        let pending = tokio::task::spawn_blocking(move || -> Result<Vec<i64>, crate::store::StoreError> {
            #[derive(Deserialize)]
            struct SendOnly {
                send: Option<report::SendState>,
            }
            Ok(store
                .wins()?
                .into_iter()
                .filter(|(_, json)| {
                    serde_json::from_str::<SendOnly>(json)
                        .ok()
                        .and_then(|w| w.send)
                        .is_some_and(|s| s.status == SendStatus::Pending)
                })
                .map(|(id, _)| id)
                .collect())
        })
        .await;
        match pending {
            Ok(Ok(ids)) => {
                if !ids.is_empty() {
                    tracing::info!(wins = ids.len(), "resuming pending ops-win reports");
                }
                for id in ids {
                    self.send(id);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot list wins to resume their reports"),
            Err(e) => tracing::warn!(error = %e, "resuming ops-win reports failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_win_is_claimed_once_and_released_with_its_guard() {
        let set = RunningSet::default();
        let first = Running::claim(&set, 7).expect("nobody holds win 7");
        // A second claim of a held win gets nothing and must leave the first one's place
        // alone (an eagerly built guard dropped under the lock would deadlock or free it).
        assert!(Running::claim(&set, 7).is_none());
        assert!(set.lock().unwrap().contains_key(&7));
        assert!(Running::claim(&set, 8).is_some(), "another win is free");
        assert_eq!(set.lock().unwrap().keys().copied().collect::<Vec<_>>(), [7], "a dropped guard frees its win");
        drop(first);
        assert!(set.lock().unwrap().is_empty());
        assert!(Running::claim(&set, 7).is_some(), "a freed win can be claimed again");
    }

    #[test]
    fn a_send_asked_for_while_the_task_runs_is_not_lost() {
        let set = RunningSet::default();
        let mut task = Running::claim(&set, 7).expect("nobody holds win 7");
        assert!(!task.again(), "nothing asked: the task ends and frees its place");
        assert!(set.lock().unwrap().is_empty());
        let newer = Running::claim(&set, 7).expect("free again");
        drop(task);
        assert!(set.lock().unwrap().contains_key(&7), "the old guard leaves the new task's place alone");
        let mut task = newer;
        assert!(Running::claim(&set, 7).is_none(), "a second send while it runs");
        assert!(task.again(), "the task looks at the win again");
        assert!(!task.again());
        drop(task);
        assert!(set.lock().unwrap().is_empty());
    }

    #[test]
    fn outboxes_do_not_share_their_running_sets() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ProfileStore> =
            Arc::new(crate::store::SqliteStore::open(dir.path(), Default::default()).unwrap());
        let (a, b) = (Outbox::new(store.clone(), WinsConfig::default()), Outbox::new(store, WinsConfig::default()));
        let held = Running::claim(&a.running, 1).unwrap();
        assert!(Running::claim(&a.clone().running, 1).is_none(), "clones share one set");
        assert!(Running::claim(&b.running, 1).is_some(), "another server's outbox has its own");
        drop(held);
    }

    #[test]
    fn flags_override_the_file_and_are_checked() {
        let file = WinsConfig::new(
            Some(SmtpConfig {
                url: "smtp://mail:25".into(),
                from: "a@example.com".into(),
                username: Some("u".into()),
                password: Some("p".into()),
                timeout_secs: None,
                ca_file: None,
            }),
            BTreeMap::from([("payments".to_string(), TeamConfig { ops_win_list: vec!["ops@example.com".into()] })]),
            WinsSettings::default(),
        )
        .unwrap();
        let c = file
            .clone()
            .with_flags(Some("smtp://relay:2525"), Some("b@example.com"), Some("https://hf.example.com/"))
            .unwrap();
        let smtp = c.smtp.as_ref().unwrap();
        assert_eq!(
            (smtp.url.as_str(), smtp.from.as_str(), smtp.username.as_deref()),
            ("smtp://relay:2525", "b@example.com", Some("u"))
        );
        assert_eq!(c.viewer_url(4), "https://hf.example.com/wins/4");
        assert_eq!(c.team_list(Some("payments")), vec!["ops@example.com"]);
        assert!(c.team_list(Some("other")).is_empty() && c.team_list(None).is_empty());
        assert_eq!(WinsConfig::default().viewer_url(4), "/wins/4");

        assert!(WinsConfig::default()
            .with_flags(None, Some("x@example.com"), None)
            .unwrap_err()
            .contains("--smtp-url"));
        assert!(file.clone().with_flags(Some("http://mail"), None, None).unwrap_err().contains("smtp://"));
        assert!(file.with_flags(None, None, Some("hf.example.com")).is_err());
        let bad_list = WinsConfig::new(
            None,
            BTreeMap::from([("t".to_string(), TeamConfig { ops_win_list: vec!["nope".into()] })]),
            WinsSettings::default(),
        )
        .unwrap_err();
        assert!(bad_list.contains("[teams.t]"), "{bad_list}");
    }
}
