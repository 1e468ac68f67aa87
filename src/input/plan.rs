//! Checks that need the whole file: duplicates, the support matrix, and accounts that get
//! opposing actions. The [`Plan`] is what `validate`, `--dry-run` and the confirmation prompt show.
//!
//! Memory grows only with the number of distinct accounts, and each costs a 64-bit hash and eight
//! bytes of flags, never the row itself, so a million-row file checks in bounded memory.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use serde::Serialize;

use super::{InputFormat, Job, RowError};
use crate::graph::model::{Action, Provider, documented_providers, is_documented};
use crate::sanitize::printable;

/// How many errors, duplicates and warnings a plan keeps to show; the rest are only counted.
pub const SHOWN: usize = 50;

/// Whether actions outside Microsoft's documented matrix may be sent (`--allow-unlisted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unlisted {
    #[default]
    Refuse,
    Allow,
}

/// What to do with a row that passed its own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// The same identity account, account, action and provider came earlier; it runs once.
    Duplicate,
}

/// The identity of the account a row acts on, used for duplicates and for keeping one account's
/// rows in file order. Ids are compared by a 64-bit hash of their exact bytes, not by the text:
/// case matters (Okta's ids are case sensitive, and two accounts whose ids differ only in case are
/// two accounts, issue 10), but two different accounts whose hashes collide would count as one.
/// That costs 8 bytes an account instead of the ids themselves, the bound that keeps a million-row
/// input in bounded memory; the chance of any collision among n accounts is about n^2 / 2^65 (three
/// in a hundred million at a million accounts). The hash lives only in this process (nothing
/// written to disk holds it), so std's hasher, fast and keyed alike in every run, is fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKey(pub u64);

impl AccountKey {
    pub fn of(job: &Job) -> AccountKey {
        AccountKey::new(&job.identity_account_id, &job.account_id)
    }

    pub fn new(identity_account_id: &str, account_id: &str) -> AccountKey {
        let mut hasher = DefaultHasher::new();
        hasher.write(identity_account_id.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(account_id.as_bytes());
        AccountKey(hasher.finish())
    }
}

/// The identity of a row's action (identity account, account, action, provider): what duplicates
/// and `--resume` match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowKey(pub u64);

impl RowKey {
    pub fn of(job: &Job) -> RowKey {
        RowKey::new(AccountKey::of(job), job.action, job.provider)
    }

    /// A row refused before its provider was known keys with no provider: it matches nothing
    /// that was sent.
    pub fn new(account: AccountKey, action: Action, provider: Option<Provider>) -> RowKey {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(account.0);
        hasher.write_u8(action as u8);
        hasher.write_u8(provider.map_or(u8::MAX, |p| p as u8));
        RowKey(hasher.finish())
    }
}

/// Maps keyed by [`AccountKey`] or [`RowKey`]: the key is already a hash.
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<PassThroughHasher>>;

/// The key is already a hash, so the map need not hash it again.
#[derive(Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Per-account state: 8 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct AccountSeen {
    /// Bit `action * 3 + provider` is set once that pair was seen for the account.
    pairs: u32,
    /// Line of the first disable or enable for the account (0: none yet), with the top bit set
    /// when it was an enable.
    first_toggle: u32,
}

const ENABLE_BIT: u32 = 1 << 31;

/// The summary of a checked input.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub input: String,
    pub format: Option<InputFormat>,
    /// Data rows read (blank rows aside).
    pub rows: u64,
    /// Rows that will be sent: valid and not duplicates.
    pub actions: u64,
    /// Distinct (identity account, account) pairs among the rows to send.
    pub accounts: u64,
    /// Rows to send, by action then provider, in Graph's spelling.
    pub matrix: Vec<MatrixCell>,
    pub duplicates: Counted<u64>,
    pub warnings: Counted<Note>,
    pub errors: Counted<Note>,
    /// Carry-through columns, in order.
    pub carry_columns: Vec<String>,
    /// Rows to send that an earlier run already did (`--resume`); they are skipped.
    #[serde(skip_serializing_if = "is_zero")]
    pub already_succeeded: u64,
    /// Rows whose identity is looked up before the first action (SPEC section 8).
    #[serde(skip_serializing_if = "is_zero")]
    pub lookups: u64,
    /// The rows to look up by action, so that the plan shows the action of every row (issue 16).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lookup_actions: Vec<ActionRows>,
    /// Rows the lookup refused (`identityNotFound`, ...): they send nothing.
    pub refused: Counted<Note>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MatrixCell {
    pub action: Action,
    pub identity_provider: Provider,
    pub rows: u64,
}

/// How many rows of one action.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActionRows {
    pub action: Action,
    pub rows: u64,
}

/// A message tied to a line of the input.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Note {
    pub line: u64,
    pub message: String,
}

/// The first [`SHOWN`] items and how many there were in all.
#[derive(Debug, Clone, Serialize)]
pub struct Counted<T> {
    pub count: u64,
    pub shown: Vec<T>,
}

impl<T> Default for Counted<T> {
    fn default() -> Self {
        Counted {
            count: 0,
            shown: Vec::new(),
        }
    }
}

impl<T> Counted<T> {
    fn push(&mut self, item: T) {
        self.count += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(item);
        }
    }
}

impl Plan {
    /// True when nothing stands in the way of sending.
    pub fn is_clean(&self) -> bool {
        self.errors.count == 0
    }
}

/// Walks the rows of one input, deciding each one and building the [`Plan`].
pub struct Checker {
    unlisted: Unlisted,
    accounts: KeyMap<AccountKey, AccountSeen>,
    counts: [[u64; 3]; 6],
    unlisted_seen: [[u64; 3]; 6],
    lookup_actions: [u64; 6],
    /// Rows an earlier run did that were not checked here ([`Checker::done_earlier`]).
    done_keys: KeyMap<RowKey, ()>,
    plan: Plan,
}

impl Checker {
    pub fn new(input: &str, format: Option<InputFormat>, unlisted: Unlisted) -> Checker {
        Checker::with_capacity(input, format, unlisted, 0)
    }

    /// A checker sized for `accounts` accounts up front (the run's second pass knows the count
    /// from the first), so its map never grows: growing briefly holds the old and new tables.
    pub fn with_capacity(
        input: &str,
        format: Option<InputFormat>,
        unlisted: Unlisted,
        accounts: usize,
    ) -> Checker {
        Checker {
            unlisted,
            accounts: KeyMap::with_capacity_and_hasher(accounts, Default::default()),
            counts: [[0; 3]; 6],
            unlisted_seen: [[0; 3]; 6],
            lookup_actions: [0; 6],
            done_keys: KeyMap::default(),
            plan: Plan {
                input: input.to_owned(),
                format,
                ..Plan::default()
            },
        }
    }

    /// Records a row that will be looked up: it is decided once the lookup has found it, but
    /// its action is known now.
    pub fn defer(&mut self, action: Action) {
        self.plan.rows += 1;
        self.plan.lookups += 1;
        self.lookup_actions[action.index()] += 1;
    }

    /// Counts a row an earlier run already did (`--resume`): nothing to check or look up. It
    /// is one of the plan's actions (as `already_succeeded` counts it), and a later row with
    /// its key is a duplicate, as it was in the earlier run (issue 16).
    pub fn done_earlier(&mut self, key: Option<RowKey>) {
        self.plan.rows += 1;
        self.plan.actions += 1;
        if let Some(key) = key {
            self.done_keys.insert(key, ());
        }
    }

    /// Records a row the lookup refused.
    pub fn refuse(&mut self, line: u64, code: &str, message: &str) {
        self.plan.rows += 1;
        self.plan.refused.push(Note {
            line,
            message: format!("{code}: {message}"),
        });
    }

    /// Notes something about a row to send that the responder should see first (issue 20: a
    /// user Graph will refuse).
    pub fn warn(&mut self, line: u64, message: String) {
        self.plan.warnings.push(Note { line, message });
    }

    /// Records a row that failed its own checks.
    pub fn reject(&mut self, error: RowError) {
        self.plan.rows += 1;
        self.plan.errors.push(Note {
            line: error.line,
            message: error.reason,
        });
    }

    /// Decides a well-formed row. `Err` is a row error (already recorded in the plan).
    pub fn check(&mut self, job: &Job) -> Result<Verdict, RowError> {
        self.plan.rows += 1;
        let action = job.action;
        let Some(provider) = job.provider else {
            let error = RowError {
                line: job.row,
                reason: "no identityProvider".to_owned(),
            };
            self.plan.errors.push(Note {
                line: error.line,
                message: error.reason.clone(),
            });
            return Err(error);
        };
        // Microsoft's table is only an offline guess: a looked-up account's own `actions` list
        // already said yes (SPEC sections 1 and 8).
        if job.resolved_by.is_none() && !is_documented(action, provider) {
            match self.unlisted {
                Unlisted::Refuse => {
                    let error = RowError {
                        line: job.row,
                        reason: unlisted_reason(action, provider),
                    };
                    self.plan.errors.push(Note {
                        line: error.line,
                        message: error.reason.clone(),
                    });
                    return Err(error);
                }
                Unlisted::Allow => {
                    self.unlisted_seen[action.index()][provider.index()] += 1;
                }
            }
        }

        if self.done_keys.contains_key(&RowKey::of(job)) {
            self.plan.duplicates.push(job.row);
            return Ok(Verdict::Duplicate);
        }
        let pair_bit = 1u32 << (action.index() * 3 + provider.index());
        let line = u32::try_from(job.row).unwrap_or(u32::MAX);
        let seen = self.accounts.entry(AccountKey::of(job)).or_default();
        if seen.pairs & pair_bit != 0 {
            self.plan.duplicates.push(job.row);
            return Ok(Verdict::Duplicate);
        }
        seen.pairs |= pair_bit;

        if matches!(action, Action::Disable | Action::Enable) {
            let this_is_enable = action == Action::Enable;
            if seen.first_toggle == 0 {
                seen.first_toggle = line | if this_is_enable { ENABLE_BIT } else { 0 };
            } else if (seen.first_toggle & ENABLE_BIT != 0) != this_is_enable {
                let first_line = seen.first_toggle & !ENABLE_BIT;
                let first_action = action.opposite().unwrap_or(action);
                self.plan.warnings.push(Note {
                    line: job.row,
                    message: format!(
                        "account {:?} ({}) gets {action} here and {first_action} on line {first_line}; they will run in file order",
                        job.identity_account_id, printable(&job.account_id)
                    ),
                });
            }
        }

        self.counts[action.index()][provider.index()] += 1;
        self.plan.actions += 1;
        Ok(Verdict::Send)
    }

    /// Closes the walk and returns the plan.
    pub fn finish(mut self, carry_columns: &[String]) -> Plan {
        self.plan.accounts = self.accounts.len() as u64;
        self.plan.carry_columns = carry_columns.to_vec();
        for action in Action::ALL {
            let rows = self.lookup_actions[action.index()];
            if rows > 0 {
                self.plan.lookup_actions.push(ActionRows { action, rows });
            }
            for provider in Provider::ALL {
                let rows = self.counts[action.index()][provider.index()];
                if rows > 0 {
                    self.plan.matrix.push(MatrixCell {
                        action,
                        identity_provider: provider,
                        rows,
                    });
                }
                let unlisted = self.unlisted_seen[action.index()][provider.index()];
                if unlisted > 0 {
                    self.plan.warnings.push(Note {
                        line: 0,
                        message: format!(
                            "{unlisted} row(s) send {action} to {provider}, which Microsoft does not document; sent anyway because of --allow-unlisted"
                        ),
                    });
                }
            }
        }
        self.plan
    }
}

fn unlisted_reason(action: Action, provider: Provider) -> String {
    let documented = documented_providers(action);
    let documented = if documented.is_empty() {
        "no provider yet".to_owned()
    } else {
        documented
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if provider == Provider::EntraId {
        format!(
            "{action} for entraID is not offered: Microsoft lists entraID actions as not in the current scope (documented for {action}: {documented}); pass --allow-unlisted to send it anyway"
        )
    } else {
        format!(
            "{action} is not documented for {provider} (documented for {action}: {documented}); pass --allow-unlisted if Microsoft now supports it"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(line: u64, id: &str, action: Action, provider: Provider) -> Job {
        Job {
            row: line,
            identity_account_id: id.to_owned(),
            account_id: format!("acct-{id}"),
            action,
            provider: Some(provider),
            carry: vec![],
            resolved_by: None,
            earlier_attempts: 0,
        }
    }

    #[test]
    fn duplicates_run_once() {
        let mut checker = Checker::new("f", None, Unlisted::Refuse);
        let a = job(2, "abc", Action::Disable, Provider::Okta);
        let b = job(3, "abc", Action::Disable, Provider::Okta);
        assert_eq!(checker.check(&a), Ok(Verdict::Send));
        assert_eq!(checker.check(&b), Ok(Verdict::Duplicate));
        let other_action = job(4, "abc", Action::RevokeAllSessions, Provider::Okta);
        assert_eq!(checker.check(&other_action), Ok(Verdict::Send));
        let plan = checker.finish(&[]);
        assert_eq!((plan.rows, plan.actions, plan.accounts), (3, 2, 1));
        assert_eq!(plan.duplicates.shown, vec![3]);
    }

    #[test]
    fn issue_10_okta_ids_that_differ_only_in_case_are_two_accounts() {
        let mut checker = Checker::new("f", None, Unlisted::Refuse);
        let mut a = job(2, "ia", Action::Disable, Provider::Okta);
        a.account_id = "00uAbC".into();
        let mut b = job(3, "ia", Action::Disable, Provider::Okta);
        b.account_id = "00uabc".into();
        assert_eq!(checker.check(&a), Ok(Verdict::Send));
        assert_eq!(checker.check(&b), Ok(Verdict::Send), "not a duplicate");
        assert_eq!(checker.finish(&[]).accounts, 2);
    }

    #[test]
    fn unlisted_pairs_are_errors_unless_allowed() {
        let mut refuse = Checker::new("f", None, Unlisted::Refuse);
        let bad = job(5, "x", Action::RevokeAllSessions, Provider::ActiveDirectory);
        let err = refuse.check(&bad).unwrap_err();
        assert!(
            err.reason
                .contains("documented for revokeAllSessions: okta"),
            "{}",
            err.reason
        );
        let entra = job(6, "y", Action::Disable, Provider::EntraId);
        assert!(refuse.check(&entra).unwrap_err().reason.contains("entraID"));
        assert_eq!(refuse.finish(&[]).errors.count, 2);

        let mut allow = Checker::new("f", None, Unlisted::Allow);
        assert_eq!(allow.check(&bad), Ok(Verdict::Send));
        let plan = allow.finish(&[]);
        assert!(plan.is_clean());
        assert_eq!(plan.warnings.count, 1);
        assert!(plan.warnings.shown[0].message.contains("--allow-unlisted"));
    }

    #[test]
    fn opposing_actions_warn_naming_both_lines() {
        let mut checker = Checker::new("f", None, Unlisted::Refuse);
        checker
            .check(&job(3, "a", Action::Disable, Provider::Okta))
            .unwrap();
        checker
            .check(&job(9, "a", Action::Enable, Provider::Okta))
            .unwrap();
        let plan = checker.finish(&[]);
        assert_eq!(plan.warnings.count, 1);
        let note = &plan.warnings.shown[0];
        assert_eq!(note.line, 9);
        assert!(
            note.message.contains("enable here and disable on line 3"),
            "{}",
            note.message
        );
    }

    #[test]
    fn matrix_counts_rows_by_action_and_provider() {
        let mut checker = Checker::new("f", None, Unlisted::Refuse);
        checker
            .check(&job(2, "a", Action::Disable, Provider::Okta))
            .unwrap();
        checker
            .check(&job(3, "b", Action::Disable, Provider::Okta))
            .unwrap();
        checker
            .check(&job(
                4,
                "c",
                Action::ForcePasswordReset,
                Provider::ActiveDirectory,
            ))
            .unwrap();
        let plan = checker.finish(&[]);
        assert_eq!(
            plan.matrix,
            vec![
                MatrixCell {
                    action: Action::Disable,
                    identity_provider: Provider::Okta,
                    rows: 2
                },
                MatrixCell {
                    action: Action::ForcePasswordReset,
                    identity_provider: Provider::ActiveDirectory,
                    rows: 1
                },
            ]
        );
    }
}
