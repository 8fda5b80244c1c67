//! Planning a group commit: for each event of each submission, append it, answer it as a
//! duplicate, or refuse its submission with a conflict. Pure: what is stored is asked of a
//! [`StoredIds`] (the projection in the server, a table in the tests), and the log is never read.
//!
//! The rules, each with a test below:
//! - an `event_id` is scoped by its `mcp_id`;
//! - an `event_id` stored with the same body is a duplicate: answered with the stored seq, not
//!   appended again; with another body it is a conflict naming that seq;
//! - within one submission, the second use of an `event_id` with the same body is a duplicate of
//!   the first (one append, the same seq twice); with another body it is a conflict naming the
//!   first event's index, since neither has a seq;
//! - across submissions of one group, a later one reusing an earlier one's `event_id` is a
//!   duplicate (same body) or a conflict naming the seq the earlier one is being given;
//! - a submission is all or nothing: one conflict refuses all of it, lists every conflict, and
//!   claims nothing, so later submissions of the group plan as if it had never come;
//! - nothing of a key follows its revocation record in the log: a submission admitted before
//!   the revocation but planned after its record (stored, or earlier in the group) is refused
//!   whole (`key_revoked`).

use hashbrown::HashMap;

use super::{Conflict, Holder};
use crate::event::NewEvent;
use crate::projector::BodyDigest;

/// What is stored under one `(mcp_id, event_id)`: the first event that used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredId {
    /// Its seq.
    pub seq: u64,
    /// The digest of its body.
    pub digest: BodyDigest,
}

/// What planning needs to know of the stored log.
pub trait StoredIds {
    /// The first stored event with this `(mcp_id, event_id)`, if any.
    fn stored_id(&self, mcp_id: &str, event_id: &str) -> Option<StoredId>;
    /// The digest of a body, as [`StoredId::digest`] holds it.
    fn digest(&self, body: &str) -> BodyDigest;
    /// Whether a stored revocation record revokes `key_id`.
    fn key_revoked(&self, key_id: &[u8; 8]) -> bool;
}

/// What became of one event of a planned group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Appended as the n-th event of the group.
    Append(usize),
    /// Already stored at this seq.
    Stored(u64),
    /// The same event as the n-th appended event of this group.
    SameAs(usize),
}

use crate::projector::Projection;

impl StoredIds for Projection {
    fn stored_id(&self, mcp_id: &str, event_id: &str) -> Option<StoredId> {
        self.event_id_entry(mcp_id, event_id)
            .map(|(seq, digest)| StoredId { seq, digest })
    }

    fn digest(&self, body: &str) -> BodyDigest {
        self.body_digest(body)
    }

    fn key_revoked(&self, key_id: &[u8; 8]) -> bool {
        Projection::key_revoked(self, key_id)
    }
}

/// What the accepted submissions of a group claim, borrowed from the group itself.
#[derive(Default)]
pub(super) struct Claims<'a> {
    /// (mcp_id, event_id) → (append number, body).
    event_ids: HashMap<(&'a str, &'a str), (usize, &'a str)>,
    /// (submission, event) of every event to append, in append order.
    pub(super) appended: Vec<(usize, usize)>,
}

/// Decides each event of submission `submission_index` against what is stored and what the
/// submissions before it in the group claim, or lists every conflict in it. Claims are added to
/// `group` only when the submission is accepted. `next_seq` is the seq the group's first append
/// will get.
pub(super) fn plan<'a>(
    stored: &impl StoredIds,
    submission_index: usize,
    events: &'a [NewEvent],
    group: &mut Claims<'a>,
    next_seq: u64,
) -> Result<Vec<Slot>, Vec<Conflict>> {
    let mut slots = Vec::with_capacity(events.len());
    let mut conflicts = Vec::new();
    let mut own = Claims::default();
    let base = group.appended.len();
    for (index, event) in events.iter().enumerate() {
        if let Some(event_id) = event.event_id() {
            let mcp_id = event.mcp_id();
            let reused = |holder: Holder| Conflict {
                index,
                field: "event_id",
                event_id: event_id.to_owned(),
                holder,
            };
            if let Some(first) = stored.stored_id(mcp_id, event_id) {
                if first.digest == stored.digest(event.body()) {
                    slots.push(Slot::Stored(first.seq));
                } else {
                    conflicts.push(reused(Holder::Stored(first.seq)));
                }
                continue;
            }
            let key = (mcp_id, event_id);
            // Earlier in this submission: the other event is named by its index, since neither
            // has a seq (nothing of a refused submission is stored).
            if let Some(&(n, body)) = own.event_ids.get(&key) {
                if body == event.body() {
                    slots.push(Slot::SameAs(n));
                } else {
                    conflicts.push(reused(Holder::Earlier(own.appended[n - base].1)));
                }
                continue;
            }
            // In another request of the same group commit: stored just before this one.
            if let Some(&(n, body)) = group.event_ids.get(&key) {
                if body == event.body() {
                    slots.push(Slot::SameAs(n));
                } else {
                    conflicts.push(reused(Holder::Stored(next_seq + n as u64)));
                }
                continue;
            }
            own.event_ids
                .insert(key, (base + own.appended.len(), event.body()));
        }
        slots.push(Slot::Append(base + own.appended.len()));
        own.appended.push((submission_index, index));
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    group.event_ids.extend(own.event_ids);
    group.appended.extend(own.appended);
    Ok(slots)
}

/// One submission's plan: a slot per event, or why it is refused.
pub(super) type Planned = Result<Vec<Slot>, Refused>;

/// Why planning refuses a submission.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Refused {
    /// Its event_ids clash: every conflict.
    Conflicts(Vec<Conflict>),
    /// Its key was revoked by a record stored, or planned earlier in the group, after the
    /// submission was admitted: nothing of a key follows its revocation record in the log.
    KeyRevoked,
}

impl From<Refused> for super::SubmitError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Conflicts(conflicts) => super::SubmitError::Conflict(conflicts),
            Refused::KeyRevoked => super::SubmitError::KeyRevoked,
        }
    }
}

/// Plans every submission of a group in order against `stored`: each one's plan, and the
/// (submission, event) of every event to append, in append order.
pub(super) fn plan_group(
    stored: &impl StoredIds,
    group: &[super::Submission],
    next_seq: u64,
) -> (Vec<Planned>, Vec<(usize, usize)>) {
    plan_submissions(
        stored,
        group.iter().map(|s| (s.key_id, s.events.as_slice())),
        next_seq,
    )
}

/// [`plan_group`] over each submission's key id and events: a submission whose key a stored
/// record, or a record planned earlier in the group, revokes is refused whole.
fn plan_submissions<'a>(
    stored: &impl StoredIds,
    group: impl Iterator<Item = ([u8; 8], &'a [NewEvent])>,
    next_seq: u64,
) -> (Vec<Planned>, Vec<(usize, usize)>) {
    let mut claims = Claims::default();
    // Keys revoked by records planned earlier in this group.
    let mut revoked_here = Vec::new();
    let plans = group
        .enumerate()
        .map(|(index, (key_id, events))| {
            if stored.key_revoked(&key_id) || revoked_here.contains(&key_id) {
                return Err(Refused::KeyRevoked);
            }
            let planned =
                plan(stored, index, events, &mut claims, next_seq).map_err(Refused::Conflicts)?;
            revoked_here.extend(events.iter().filter_map(crate::event::revokes));
            Ok(planned)
        })
        .collect();
    (plans, claims.appended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    /// A stored log as a table: (mcp_id, event_id) → (seq, body). The digest is the body itself,
    /// so a test can see what is compared.
    #[derive(Default)]
    struct Table(Vec<(&'static str, &'static str, u64, &'static str)>);

    impl StoredIds for Table {
        fn stored_id(&self, mcp_id: &str, event_id: &str) -> Option<StoredId> {
            self.0
                .iter()
                .find(|(m, e, _, _)| *m == mcp_id && *e == event_id)
                .map(|&(_, _, seq, body)| StoredId {
                    seq,
                    digest: self.digest(body),
                })
        }

        fn key_revoked(&self, key_id: &[u8; 8]) -> bool {
            *key_id == STORED_REVOKED
        }

        fn digest(&self, body: &str) -> BodyDigest {
            let mut digest = [0u64; 2];
            for (i, b) in body.bytes().enumerate() {
                digest[i % 2] = digest[i % 2].wrapping_mul(257).wrapping_add(u64::from(b));
            }
            digest
        }
    }

    fn event(mcp: &str, event_id: Option<&str>, body: &str) -> NewEvent {
        NewEvent::new(Action::Progress, 1.0, "i", mcp, event_id, body)
    }

    /// What one submission is expected to give.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Slots(Vec<Slot>),
        /// The indexes of the conflicting events, and a phrase each message holds.
        Conflicts(Vec<(usize, &'static str)>),
    }

    struct Case {
        rule: &'static str,
        stored: Table,
        /// Each submission of the group: (mcp_id, event_id, body) per event.
        group: Vec<Vec<(&'static str, Option<&'static str>, &'static str)>>,
        expected: Vec<Outcome>,
    }

    fn run(case: Case) {
        let submissions: Vec<Vec<NewEvent>> = case
            .group
            .iter()
            .map(|events| events.iter().map(|&(m, e, b)| event(m, e, b)).collect())
            .collect();
        let mut claims = Claims::default();
        for (index, (events, expected)) in submissions.iter().zip(&case.expected).enumerate() {
            let got = match plan(&case.stored, index, events, &mut claims, 100) {
                Ok(slots) => Outcome::Slots(slots),
                Err(conflicts) => {
                    for (conflict, (_, phrase)) in conflicts.iter().zip(match expected {
                        Outcome::Conflicts(list) => list.as_slice(),
                        Outcome::Slots(_) => &[],
                    }) {
                        assert!(
                            conflict.to_string().contains(phrase),
                            "{}: {conflict} lacks {phrase:?}",
                            case.rule,
                        );
                        assert_eq!(conflict.field, "event_id");
                    }
                    let list = match expected {
                        Outcome::Conflicts(list) => list,
                        Outcome::Slots(_) => panic!("{}: refused: {conflicts:?}", case.rule),
                    };
                    Outcome::Conflicts(
                        conflicts
                            .iter()
                            .zip(list)
                            .map(|(c, (_, phrase))| (c.index, *phrase))
                            .collect(),
                    )
                }
            };
            assert_eq!(&got, expected, "{}: submission {index}", case.rule);
        }
    }

    /// The rules over the projection itself, as the writer asks it: the same body is a
    /// duplicate at the stored seq, another body a conflict.
    #[test]
    fn the_projection_answers_for_what_is_stored() {
        let mut projection = crate::projector::Projection::new();
        projection.apply(&crate::event::StoredEvent {
            seq: 7,
            write_index: 0,
            received_at_us: 1,
            key_id: [0; 8],
            action: Action::Progress,
            timestamp: 1.0,
            interaction_id: "i",
            mcp_id: "m",
            event_id: Some("e1"),
            body: "a",
        });
        let planned =
            |events: &[NewEvent]| plan(&projection, 0, events, &mut Claims::default(), 100);
        assert_eq!(
            planned(&[event("m", Some("e1"), "a")]),
            Ok(vec![Slot::Stored(7)])
        );
        let conflicts = planned(&[event("m", Some("e1"), "b")]).unwrap_err();
        assert!(conflicts[0].to_string().contains("seq 7"), "{conflicts:?}");
        assert_eq!(
            planned(&[event("n", Some("e1"), "b")]),
            Ok(vec![Slot::Append(0)])
        );
    }

    #[test]
    fn every_idempotency_and_conflict_rule() {
        use Outcome::{Conflicts, Slots};
        use Slot::{Append, SameAs, Stored};
        let cases = vec![
            Case {
                rule: "events without event_id are always appended",
                stored: Table::default(),
                group: vec![vec![("m", None, "a"), ("m", None, "a")]],
                expected: vec![Slots(vec![Append(0), Append(1)])],
            },
            Case {
                rule: "a stored event_id with the same body is a duplicate at the stored seq",
                stored: Table(vec![("m", "e1", 7, "a")]),
                group: vec![vec![("m", Some("e1"), "a"), ("m", None, "b")]],
                expected: vec![Slots(vec![Stored(7), Append(0)])],
            },
            Case {
                rule: "a stored event_id with another body is a conflict naming the stored seq",
                stored: Table(vec![("m", "e1", 7, "a")]),
                group: vec![vec![("m", None, "x"), ("m", Some("e1"), "b")]],
                expected: vec![Conflicts(vec![(1, "seq 7")])],
            },
            Case {
                rule: "event_ids are scoped by mcp_id",
                stored: Table(vec![("m", "e1", 7, "a")]),
                group: vec![vec![("other", Some("e1"), "b")]],
                expected: vec![Slots(vec![Append(0)])],
            },
            Case {
                rule: "twice in one batch with the same body: one append, the same seq twice",
                stored: Table::default(),
                group: vec![vec![("m", Some("e1"), "a"), ("m", Some("e1"), "a")]],
                expected: vec![Slots(vec![Append(0), SameAs(0)])],
            },
            Case {
                rule: "twice in one batch with another body: a conflict naming the first index",
                stored: Table::default(),
                group: vec![vec![
                    ("m", Some("e1"), "a"),
                    ("m", Some("e2"), "b"),
                    ("m", Some("e1"), "c"),
                ]],
                expected: vec![Conflicts(vec![(2, "event 0 of this batch")])],
            },
            Case {
                rule: "the first index is the batch's own, whatever came before it in the group",
                stored: Table::default(),
                group: vec![
                    vec![("m", None, "x"), ("m", None, "y")],
                    vec![
                        ("m", None, "z"),
                        ("m", Some("e1"), "a"),
                        ("m", Some("e1"), "c"),
                    ],
                ],
                expected: vec![
                    Slots(vec![Append(0), Append(1)]),
                    Conflicts(vec![(2, "event 1 of this batch")]),
                ],
            },
            Case {
                rule: "a batch is all or nothing and lists every conflict",
                stored: Table(vec![("m", "e1", 7, "a"), ("m", "e2", 8, "b")]),
                group: vec![vec![
                    ("m", Some("e1"), "changed"),
                    ("m", None, "fine"),
                    ("m", Some("e2"), "changed"),
                ]],
                expected: vec![Conflicts(vec![(0, "seq 7"), (2, "seq 8")])],
            },
            Case {
                rule: "a later submission of the group reusing an event_id with the same body",
                stored: Table::default(),
                group: vec![
                    vec![("m", None, "x"), ("m", Some("e1"), "a")],
                    vec![("m", Some("e1"), "a")],
                ],
                expected: vec![Slots(vec![Append(0), Append(1)]), Slots(vec![SameAs(1)])],
            },
            Case {
                rule: "a later submission reusing an event_id with another body names its seq",
                stored: Table::default(),
                group: vec![
                    vec![("m", None, "x"), ("m", Some("e1"), "a")],
                    vec![("m", Some("e1"), "b")],
                ],
                expected: vec![
                    Slots(vec![Append(0), Append(1)]),
                    Conflicts(vec![(0, "seq 101")]),
                ],
            },
            Case {
                rule: "a refused submission claims nothing",
                stored: Table(vec![("m", "e9", 7, "a")]),
                group: vec![
                    vec![("m", Some("e1"), "a"), ("m", Some("e9"), "changed")],
                    vec![("m", Some("e1"), "other body"), ("m", None, "y")],
                ],
                expected: vec![
                    Conflicts(vec![(1, "seq 7")]),
                    Slots(vec![Append(0), Append(1)]),
                ],
            },
        ];
        for case in cases {
            run(case);
        }
    }

    /// A key a stored record revokes.
    const STORED_REVOKED: [u8; 8] = [9; 8];

    /// Nothing of a key follows its revocation record: a submission of a key revoked by a stored
    /// record, or by a record earlier in the same group, is refused whole and claims nothing; one
    /// before the record in the group, and other keys, are planned as ever.
    #[test]
    fn a_revoked_keys_submission_is_refused_after_its_record() {
        let (writer, admin, other) = ([1; 8], [2; 8], [3; 8]);
        let before = [event("m", Some("a"), "{}")];
        let record = [crate::event::revocation_record(writer, 1.0)];
        let after = [event("m", Some("b"), "{}")];
        let others = [event("m", Some("c"), "{}")];
        let stored_revoked = [event("m", Some("d"), "{}")];
        let group = [
            (writer, &before[..]),
            (admin, &record[..]),
            (writer, &after[..]),
            (other, &others[..]),
            (STORED_REVOKED, &stored_revoked[..]),
        ];
        let (plans, appended) = plan_submissions(&Table::default(), group.into_iter(), 100);
        assert_eq!(plans[0], Ok(vec![Slot::Append(0)]));
        assert_eq!(plans[1], Ok(vec![Slot::Append(1)]));
        assert_eq!(plans[2], Err(Refused::KeyRevoked));
        assert_eq!(plans[3], Ok(vec![Slot::Append(2)]));
        assert_eq!(plans[4], Err(Refused::KeyRevoked));
        assert_eq!(appended, vec![(0, 0), (1, 0), (3, 0)]);
    }
}
