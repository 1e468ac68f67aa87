//! The one row decider (issue 17): what becomes of each input row before anything is sent. A row
//! is rejected (it fails its own checks), carried over (an earlier run did it, `--resume`), left
//! to the lookup, refused (by the lookup or the guard), a duplicate, or sent. `validate`,
//! `resolve`, the plan `run` confirms and the feed that sends all ask [`Decider::decide`], and the
//! [`Plan`] is the fold of its answers. [`Confirmed`] keeps a digest of every decision of the
//! confirmed plan, so the feed sends a row only when it is decided exactly as the operator saw it.

use std::hash::{DefaultHasher, Hasher};

use super::{Directory, Settled, settle};
use crate::input::plan::{Checker, Plan, RowKey, Verdict};
use crate::input::{AccountScope, Job, Row, RowError};

use super::resolve::Refusal;

/// What becomes of one input row.
#[derive(Debug)]
pub(crate) enum RowDecision {
    /// The row fails its own checks (or, read again, no longer parses): nothing is sent until
    /// it is fixed.
    Rejected(RowError),
    /// The row names someone the lookup must find first; it is decided once the lookup has
    /// answered.
    ToLookUp(Row),
    /// What the row does to each account it reaches: one, or, for a row that acts on all of a
    /// person's accounts (issue 20), each linked account that offers the action, each with its
    /// own decision.
    Accounts(Vec<AccountDecision>),
}

/// What becomes of one account a row reaches.
#[derive(Debug)]
pub(crate) enum AccountDecision {
    /// An earlier run did it (`--resume`): its record, at `offset` in the results, is carried
    /// over for this row.
    CarriedOver { job: Job, offset: u64 },
    /// Refused before anything is sent (SPEC section 8, the guard): recorded `failed` with the
    /// refusal's code.
    Refused { job: Job, refusal: Refusal },
    /// The same identity account, account, action and provider came earlier: recorded
    /// `skipped`, sent once.
    Duplicate(Job),
    /// Sent.
    Send(Job),
}

impl AccountDecision {
    /// The row's record as decided: its ids as given or as the lookup found them.
    pub(crate) fn job(&self) -> &Job {
        match self {
            AccountDecision::CarriedOver { job, .. }
            | AccountDecision::Refused { job, .. }
            | AccountDecision::Duplicate(job)
            | AccountDecision::Send(job) => job,
        }
    }
}

/// What an earlier run did, as the decider asks it (`--resume`). The results' reader answers it
/// (`output::resume::Earlier`, joined to this in `commands`), so deciding needs no results format.
pub(crate) trait DoneEarlier {
    /// Where the earlier run's succeeded record of the looked-up row on this line starts, when
    /// the input is the file it read.
    fn record_of_line(&self, row: &Row) -> Option<u64>;
    /// The key of that row, so that a later repeat of it is a duplicate.
    fn key_of_line(&self, row: &Row) -> Option<RowKey>;
    /// Where the succeeded record of this key starts.
    fn succeeded(&self, key: RowKey) -> Option<u64>;
    /// Requests an interrupted earlier run sent for this key without recording an answer.
    fn unanswered_attempts(&self, key: RowKey) -> u32;
}

/// Decides rows in input order, folding each decision into the plan.
pub(crate) struct Decider<'a> {
    checker: Checker,
    /// What the lookup found; `None` before it, when rows it must answer are left to it.
    directory: Option<&'a Directory>,
    /// What an earlier run did (`--resume`).
    earlier: Option<&'a dyn DoneEarlier>,
    /// `--verify` (and `resolve`): every row is looked up, even one that carries all three ids.
    verify: bool,
    already_succeeded: u64,
}

impl<'a> Decider<'a> {
    pub(crate) fn new(
        checker: Checker,
        directory: Option<&'a Directory>,
        earlier: Option<&'a dyn DoneEarlier>,
        verify: bool,
    ) -> Decider<'a> {
        Decider {
            checker,
            directory,
            earlier,
            verify,
            already_succeeded: 0,
        }
    }

    /// Decides one row as read (a row that does not parse is rejected), and counts it in the
    /// plan.
    pub(crate) fn decide(&mut self, row: Result<Row, RowError>) -> RowDecision {
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                self.checker.reject(error.clone());
                return RowDecision::Rejected(error);
            }
        };
        // A row that acts on all of a person's accounts left a record for each: each is
        // carried over by its own key once the row is looked up again (issue 20).
        if let Some(earlier) = self.earlier
            && row.accounts == AccountScope::One
            && let Some(offset) = earlier.record_of_line(&row)
        {
            // Done by the earlier run, ids and all: carried over, not looked up again (a
            // disabled account no longer offers `disable`). A later repeat of this row is a
            // duplicate, as in the earlier run (issue 16).
            self.checker.done_earlier(earlier.key_of_line(&row));
            self.already_succeeded += 1;
            let job = row.unresolved();
            return RowDecision::Accounts(vec![AccountDecision::CarriedOver { job, offset }]);
        }
        let settled = match (row.as_given().filter(|_| !self.verify), self.directory) {
            // Sent as given: the common case of a large file, spared the fan-out's vector.
            (Some(job), _) => {
                self.checker.count_row();
                return match self.check(job) {
                    Ok(decision) => RowDecision::Accounts(vec![decision]),
                    Err(error) => RowDecision::Rejected(error),
                };
            }
            (None, None) => {
                self.checker.defer(row.action, row.accounts);
                return RowDecision::ToLookUp(row);
            }
            (None, Some(directory)) => {
                let earlier = self.earlier;
                // Sent by the earlier run: done, or left unanswered by its crash. A disabled
                // account no longer offers `disable`, yet its record must be carried over or
                // its unanswered request settled (issue 20).
                let sent_earlier = |job: &Job| {
                    earlier.is_some_and(|earlier| {
                        let key = RowKey::of(job);
                        earlier.succeeded(key).is_some() || earlier.unanswered_attempts(key) > 0
                    })
                };
                settle(&row, directory, &sent_earlier)
            }
        };
        // One input row, however many accounts it reaches.
        self.checker.count_row();
        let mut accounts = Vec::with_capacity(settled.len());
        for settled in settled {
            let decision = match settled {
                Settled::Send(job) => match self.check(job) {
                    Ok(decision) => decision,
                    Err(error) => return RowDecision::Rejected(error),
                },
                Settled::Refused(job, refusal) => {
                    self.checker
                        .refuse_account(job.row, refusal.code, &refusal.message);
                    AccountDecision::Refused { job, refusal }
                }
            };
            accounts.push(decision);
        }
        RowDecision::Accounts(accounts)
    }

    /// An account the row reaches, with its ids known: a duplicate, done by the earlier run, or
    /// sent (counting the attempts an interrupted earlier run made for it). `Err`: the ids fail
    /// the checks of the whole file (no provider, Microsoft's table).
    fn check(&mut self, mut job: Job) -> Result<AccountDecision, RowError> {
        if self.checker.check_account(&job)? == Verdict::Duplicate {
            return Ok(AccountDecision::Duplicate(job));
        }
        if let Some(earlier) = self.earlier {
            let key = RowKey::of(&job);
            if let Some(offset) = earlier.succeeded(key) {
                self.already_succeeded += 1;
                return Ok(AccountDecision::CarriedOver { job, offset });
            }
            job.earlier_attempts = earlier.unanswered_attempts(key);
        }
        Ok(AccountDecision::Send(job))
    }

    /// Notes something about a row to send that the plan shows (issue 20: a user Graph will
    /// refuse).
    pub(crate) fn warn(&mut self, line: u64, message: String) {
        self.checker.warn(line, message);
    }

    /// Closes the walk and returns the plan.
    pub(crate) fn finish(self, carry_columns: &[String]) -> Plan {
        let mut plan = self.checker.finish(carry_columns);
        plan.already_succeeded = self.already_succeeded;
        plan
    }
}

/// A digest of every decision of the plan the operator confirmed, in input order (8 bytes a
/// row). The feed reads the input again to send it, and a row whose decision differs from the
/// confirmed one (the file changed in between) is never sent: the run stops there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Confirmed {
    digests: Vec<u64>,
}

impl Confirmed {
    pub(crate) fn push(&mut self, decision: &RowDecision) {
        self.digests.push(digest(decision));
    }

    /// Whether the row at `index` (counting from 0 in input order) is decided as confirmed.
    pub(crate) fn confirms(&self, index: usize, decision: &RowDecision) -> bool {
        self.digests.get(index) == Some(&digest(decision))
    }
}

/// What a decision sends or records: the kind, and for each account its ids, action and
/// provider, the refusal's code or the earlier record's place. Carried columns are not part of
/// it: they change nothing that is sent.
fn digest(decision: &RowDecision) -> u64 {
    let mut hasher = DefaultHasher::new();
    match decision {
        RowDecision::Rejected(error) => {
            hasher.write_u8(0);
            hasher.write_u64(error.line);
        }
        RowDecision::ToLookUp(row) => {
            hasher.write_u8(1);
            hasher.write_u64(row.line);
        }
        RowDecision::Accounts(accounts) => {
            hasher.write_u8(2);
            for account in accounts {
                let job = account.job();
                hasher.write_u64(job.row);
                hasher.write_u64(RowKey::of(job).0);
                match account {
                    AccountDecision::CarriedOver { offset, .. } => {
                        hasher.write_u8(0);
                        hasher.write_u64(*offset);
                    }
                    AccountDecision::Refused { refusal, .. } => {
                        hasher.write_u8(1);
                        hasher.write(refusal.code.as_bytes());
                    }
                    AccountDecision::Duplicate(_) => hasher.write_u8(2),
                    AccountDecision::Send(_) => hasher.write_u8(3),
                }
            }
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Action, Provider};
    use crate::input::plan::Unlisted;
    use crate::output::resume::{Earlier, Prior};

    fn row(line: u64, account: &str) -> Row {
        Row {
            line,
            identity_account_id: Some("id-1".to_owned()),
            account_id: Some(account.to_owned()),
            action: Action::Disable,
            provider: Some(Provider::Okta),
            sid: None,
            object_id: None,
            upn: None,
            accounts: AccountScope::One,
            carry: vec![],
        }
    }

    fn decide_all(rows: Vec<Row>, earlier: Option<&dyn DoneEarlier>) -> (Vec<RowDecision>, Plan) {
        let checker = Checker::new("in.csv", None, Unlisted::Refuse);
        let mut decider = Decider::new(checker, None, earlier, false);
        let decisions = rows
            .into_iter()
            .map(|row| decider.decide(Ok(row)))
            .collect();
        (decisions, decider.finish(&[]))
    }

    #[test]
    fn the_confirmed_plan_refuses_a_row_decided_otherwise() {
        let (planned, plan) = decide_all(vec![row(2, "00uA"), row(3, "00uA")], None);
        assert!(matches!(
            &planned[..],
            [RowDecision::Accounts(first), RowDecision::Accounts(second)]
                if matches!(first[..], [AccountDecision::Send(_)])
                    && matches!(second[..], [AccountDecision::Duplicate(_)])
        ));
        assert_eq!((plan.rows, plan.actions, plan.duplicates.count), (2, 1, 1));
        let mut confirmed = Confirmed::default();
        planned.iter().for_each(|decision| confirmed.push(decision));

        let (again, _) = decide_all(vec![row(2, "00uA"), row(3, "00uA")], None);
        assert!(confirmed.confirms(0, &again[0]) && confirmed.confirms(1, &again[1]));
        // The second line now names another account: no longer a duplicate, and not confirmed.
        let (changed, _) = decide_all(vec![row(2, "00uA"), row(3, "00uB")], None);
        assert!(confirmed.confirms(0, &changed[0]));
        assert!(!confirmed.confirms(1, &changed[1]));
        // A row past the confirmed ones is never confirmed.
        assert!(!confirmed.confirms(2, &changed[1]));
    }

    #[test]
    fn a_row_an_earlier_run_did_is_carried_over_and_an_unanswered_one_keeps_its_attempts() {
        let done = row(2, "00uA").as_given().unwrap();
        let unanswered = row(3, "00uB").as_given().unwrap();
        let mut prior = Prior::default();
        prior.succeeded.insert(RowKey::of(&done), 40);
        prior.unknown_attempts.insert(RowKey::of(&unanswered), 2);
        let earlier = Earlier {
            prior: &prior,
            same_input: true,
        };
        let (decisions, plan) = decide_all(vec![row(2, "00uA"), row(3, "00uB")], Some(&earlier));
        let RowDecision::Accounts(first) = &decisions[0] else {
            panic!("{decisions:?}");
        };
        assert!(matches!(
            first[..],
            [AccountDecision::CarriedOver { offset: 40, .. }]
        ));
        let RowDecision::Accounts(second) = &decisions[1] else {
            panic!("{decisions:?}");
        };
        let [AccountDecision::Send(job)] = &second[..] else {
            panic!("{second:?}");
        };
        assert_eq!(job.earlier_attempts, 2);
        assert_eq!((plan.actions, plan.already_succeeded), (2, 1));
    }

    #[test]
    fn issue_20_a_row_on_all_accounts_is_one_row_of_an_action_per_account() {
        use crate::graph::identity::{Fetched, Identity, LinkedAccount};
        let linked = |provider: &str, identifier: &str| LinkedAccount {
            identifier: identifier.to_owned(),
            identity_provider: provider.to_owned(),
            actions: vec!["disable".to_owned()],
        };
        let identity = Identity {
            id: "id-1".into(),
            accounts: vec![linked("activeDirectory", "ad-1"), linked("okta", "00uA")],
            ..Identity::default()
        };
        let mut directory = Directory::default();
        directory.add(Fetched {
            raw: serde_json::to_value(&identity).unwrap(),
            identity,
        });
        let fan_out = |line| Row {
            account_id: None,
            provider: None,
            accounts: AccountScope::All,
            ..row(line, "")
        };
        let checker = Checker::new("in.csv", None, Unlisted::Refuse);
        let mut decider = Decider::new(checker, Some(&directory), None, false);
        let first = decider.decide(Ok(fan_out(2)));
        let RowDecision::Accounts(accounts) = &first else {
            panic!("{first:?}");
        };
        assert!(matches!(
            accounts[..],
            [AccountDecision::Send(_), AccountDecision::Send(_)]
        ));
        // Named again: each account a duplicate of the first row's.
        let again = decider.decide(Ok(fan_out(3)));
        assert!(
            matches!(&again, RowDecision::Accounts(accounts) if accounts.len() == 2
                && accounts.iter().all(|a| matches!(a, AccountDecision::Duplicate(_)))),
            "{again:?}"
        );
        let plan = decider.finish(&[]);
        assert_eq!(
            (
                plan.rows,
                plan.actions,
                plan.accounts,
                plan.duplicates.count
            ),
            (2, 2, 2, 2)
        );
    }

    /// A crash left one account's request unanswered and carried out: that account no longer
    /// offers the action, yet the resumed fan-out still reaches it (sent again, counting the
    /// earlier attempt), so it gets a record instead of vanishing from the results.
    #[test]
    fn issue_20_an_account_left_unanswered_by_a_crash_is_still_reached_on_resume() {
        use crate::graph::identity::{Fetched, Identity, LinkedAccount};
        struct Unanswered;
        impl DoneEarlier for Unanswered {
            fn record_of_line(&self, _: &Row) -> Option<u64> {
                None
            }
            fn key_of_line(&self, _: &Row) -> Option<RowKey> {
                None
            }
            fn succeeded(&self, _: RowKey) -> Option<u64> {
                None
            }
            fn unanswered_attempts(&self, _: RowKey) -> u32 {
                1
            }
        }
        let linked = |provider: &str, identifier: &str, actions: &[&str]| LinkedAccount {
            identifier: identifier.to_owned(),
            identity_provider: provider.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        };
        // The Okta account was disabled by the crashed run: it offers `disable` no more.
        let identity = Identity {
            id: "id-1".into(),
            accounts: vec![
                linked("activeDirectory", "ad-1", &["disable"]),
                linked("okta", "00uA", &[]),
            ],
            ..Identity::default()
        };
        let mut directory = Directory::default();
        directory.add(Fetched {
            raw: serde_json::to_value(&identity).unwrap(),
            identity,
        });
        let fan_out = Row {
            account_id: None,
            provider: None,
            accounts: AccountScope::All,
            ..row(2, "")
        };
        let checker = Checker::new("in.csv", None, Unlisted::Refuse);
        let mut decider = Decider::new(checker, Some(&directory), Some(&Unanswered), false);
        let decision = decider.decide(Ok(fan_out));
        let RowDecision::Accounts(accounts) = &decision else {
            panic!("{decision:?}");
        };
        let sent: Vec<(&str, u32)> = accounts
            .iter()
            .map(|account| match account {
                AccountDecision::Send(job) => (job.account_id.as_str(), job.earlier_attempts),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sent, [("ad-1", 1), ("00uA", 1)]);
    }

    #[test]
    fn a_row_to_look_up_waits_for_the_lookup_and_a_bad_row_is_rejected() {
        let mut by_upn = row(2, "00uA");
        by_upn.identity_account_id = None;
        by_upn.upn = Some("ann@contoso.com".to_owned());
        let checker = Checker::new("in.csv", None, Unlisted::Refuse);
        let mut decider = Decider::new(checker, None, None, false);
        assert!(matches!(
            decider.decide(Ok(by_upn)),
            RowDecision::ToLookUp(_)
        ));
        let bad = RowError {
            line: 3,
            reason: "unknown action".to_owned(),
        };
        assert!(matches!(
            decider.decide(Err(bad.clone())),
            RowDecision::Rejected(error) if error == bad
        ));
        let plan = decider.finish(&[]);
        assert_eq!((plan.rows, plan.lookups, plan.errors.count), (2, 1, 1));
    }
}
