//! The projector: a pure, synchronous fold of stored events into interaction records.
//!
//! It does no I/O and reads no clock: everything it knows travels inside the events, so folding
//! the same log always gives the same view. Payloads stay in the log; a record keeps the seqs of
//! its events so a reader can fetch them from the mapped segments.
//!
//! Fold rules (SPEC §3), applied in seq order:
//! - the first event of any kind creates the record, whatever its action;
//! - the first `start` sets `start_time`; a later `start` is kept and counted as a conflict;
//! - `progress` moves `started` to `in_progress`;
//! - the first terminal event (`complete`, `error`, `cancelled`) sets `end_time` and the final
//!   status; later terminal events are kept and counted as conflicts, never applied.

use std::collections::HashMap;

use crate::event::{Action, StoredEvent};

/// The status of an interaction, derived by the fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A start event arrived and nothing after it yet.
    Started,
    /// Progress arrived and no terminal event yet.
    InProgress,
    /// The first terminal event was `interaction_complete`.
    Completed,
    /// The first terminal event was `interaction_error`.
    Failed,
    /// The first terminal event was `interaction_cancelled`.
    Cancelled,
}

impl Status {
    /// The name used in the API (the reference's names, plus `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Started => "started",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether the interaction is still running.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Started | Status::InProgress)
    }

    fn terminal(action: Action) -> Option<Status> {
        match action {
            Action::Complete => Some(Status::Completed),
            Action::Error => Some(Status::Failed),
            Action::Cancelled => Some(Status::Cancelled),
            Action::Start | Action::Progress => None,
        }
    }
}

/// The current state of one interaction. Payloads are not held here: `start_seq`,
/// `terminal_seq` and `events` say where to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The client's interaction id.
    pub interaction_id: Box<str>,
    /// The mcp_id every event of this interaction carries.
    pub mcp_id: Box<str>,
    /// Derived status.
    pub status: Status,
    /// Client timestamp of the first start event, if one arrived.
    pub start_time: Option<f64>,
    /// Client timestamp of the first terminal event, if one arrived.
    pub end_time: Option<f64>,
    /// Seq of the start event that set `start_time`.
    pub start_seq: Option<u64>,
    /// Seq of the terminal event that set the final status.
    pub terminal_seq: Option<u64>,
    /// Server receive time of the first event, in microseconds.
    pub received_at_us: u64,
    /// Key fingerprint of the first event.
    pub key_id: [u8; 8],
    /// Number of events kept but not applied: second starts and second terminal events.
    pub conflicts: u32,
    /// Seqs of every event of the interaction, ascending.
    pub events: Vec<u64>,
}

impl Record {
    /// `end_time - start_time` when both are known.
    pub fn processing_time(&self) -> Option<f64> {
        Some(self.end_time? - self.start_time?)
    }

    /// Seq of the first event.
    pub fn first_seq(&self) -> u64 {
        self.events[0]
    }

    /// Seq of the latest event.
    pub fn last_seq(&self) -> u64 {
        self.events[self.events.len() - 1]
    }

    fn new(event: &StoredEvent<'_>) -> Record {
        Record {
            interaction_id: event.interaction_id.into(),
            mcp_id: event.mcp_id.into(),
            status: Status::Started,
            start_time: None,
            end_time: None,
            start_seq: None,
            terminal_seq: None,
            received_at_us: event.received_at_us,
            key_id: event.key_id,
            conflicts: 0,
            events: Vec::new(),
        }
    }

    fn apply(&mut self, event: &StoredEvent<'_>) {
        debug_assert!(self.events.last().is_none_or(|&last| last < event.seq));
        self.events.push(event.seq);
        match event.action {
            Action::Start => {
                if self.start_seq.is_some() {
                    self.conflicts += 1;
                } else {
                    self.start_seq = Some(event.seq);
                    self.start_time = Some(event.timestamp);
                }
            }
            Action::Progress => {
                if self.status == Status::Started {
                    self.status = Status::InProgress;
                }
            }
            Action::Complete | Action::Error | Action::Cancelled => {
                if self.terminal_seq.is_some() {
                    self.conflicts += 1;
                } else {
                    self.terminal_seq = Some(event.seq);
                    self.end_time = Some(event.timestamp);
                    self.status = Status::terminal(event.action).expect("a terminal action");
                }
            }
        }
    }
}

/// Why an event cannot be appended without breaking the view's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The interaction already carries another mcp_id.
    McpMismatch {
        /// The mcp_id the interaction has.
        stored: String,
    },
}

/// What appending an event would mean, decided before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A new event: append it.
    Append,
    /// The `event_id` was stored before, at this seq; the caller compares the bodies.
    SeenEventId(u64),
}

/// Every interaction record, folded from the log, with the lookups the writer needs.
#[derive(Debug, Default)]
pub struct Projection {
    records: Vec<Record>,
    by_id: HashMap<Box<str>, u32>,
    /// `(mcp_id, event_id)` → seq. Scoped by mcp_id so that two MCPs choosing the same
    /// `event_id` never collide, and one cannot probe the other's ids.
    event_ids: HashMap<(Box<str>, Box<str>), u64>,
    events_total: u64,
    conflicts_total: u64,
}

impl Projection {
    /// An empty view.
    pub fn new() -> Projection {
        Projection::default()
    }

    /// Folds one event in. Events must arrive in ascending seq order.
    pub fn apply(&mut self, event: &StoredEvent<'_>) {
        let ordinal = match self.by_id.get(event.interaction_id) {
            Some(&ordinal) => ordinal,
            None => {
                let ordinal = u32::try_from(self.records.len()).expect("fewer than 2^32 records");
                self.records.push(Record::new(event));
                self.by_id.insert(event.interaction_id.into(), ordinal);
                ordinal
            }
        };
        let record = &mut self.records[ordinal as usize];
        let conflicts_before = record.conflicts;
        record.apply(event);
        self.conflicts_total += u64::from(record.conflicts - conflicts_before);
        self.events_total += 1;
        if let Some(event_id) = event.event_id {
            self.event_ids
                .entry((event.mcp_id.into(), event_id.into()))
                .or_insert(event.seq);
        }
    }

    /// Says whether an event may be appended, without changing anything.
    pub fn admit(
        &self,
        interaction_id: &str,
        mcp_id: &str,
        event_id: Option<&str>,
    ) -> Result<Admission, Refusal> {
        if let Some(record) = self.get(interaction_id) {
            if &*record.mcp_id != mcp_id {
                return Err(Refusal::McpMismatch {
                    stored: record.mcp_id.to_string(),
                });
            }
        }
        if let Some(event_id) = event_id {
            // The tuple key needs owned halves; the lookup is on the writer's path only for
            // events that carry an event_id.
            let key = (Box::<str>::from(mcp_id), Box::<str>::from(event_id));
            if let Some(&seq) = self.event_ids.get(&key) {
                return Ok(Admission::SeenEventId(seq));
            }
        }
        Ok(Admission::Append)
    }

    /// The record of one interaction.
    pub fn get(&self, interaction_id: &str) -> Option<&Record> {
        self.by_id
            .get(interaction_id)
            .map(|&ordinal| &self.records[ordinal as usize])
    }

    /// Every record, in order of first appearance.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Number of events folded in.
    pub fn events_total(&self) -> u64 {
        self.events_total
    }

    /// Number of events kept but not applied (second starts, second terminal events).
    pub fn conflicts_total(&self) -> u64 {
        self.conflicts_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(seq: u64, action: Action, timestamp: f64) -> StoredEvent<'static> {
        StoredEvent {
            seq,
            write_index: 0,
            received_at_us: seq * 1000,
            key_id: [0; 8],
            action,
            timestamp,
            interaction_id: "i",
            mcp_id: "m",
            event_id: None,
            body: "{}",
        }
    }

    fn fold(events: &[StoredEvent<'_>]) -> Projection {
        let mut projection = Projection::new();
        for e in events {
            projection.apply(e);
        }
        projection
    }

    #[test]
    fn start_progress_complete() {
        let p = fold(&[
            event(1, Action::Start, 10.0),
            event(2, Action::Progress, 11.0),
            event(3, Action::Complete, 12.5),
        ]);
        let r = p.get("i").unwrap();
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.processing_time(), Some(2.5));
        assert_eq!(r.events, vec![1, 2, 3]);
        assert_eq!(p.conflicts_total(), 0);
    }

    #[test]
    fn progress_before_start_is_kept_and_start_arrives_later() {
        let p = fold(&[
            event(1, Action::Progress, 11.0),
            event(2, Action::Start, 10.0),
        ]);
        let r = p.get("i").unwrap();
        assert_eq!(r.status, Status::InProgress);
        assert_eq!(r.start_time, Some(10.0));
        assert_eq!(r.events.len(), 2);
    }

    #[test]
    fn first_terminal_wins_and_later_ones_are_conflicts() {
        let p = fold(&[
            event(1, Action::Start, 10.0),
            event(2, Action::Error, 11.0),
            event(3, Action::Complete, 12.0),
            event(4, Action::Progress, 13.0),
        ]);
        let r = p.get("i").unwrap();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.end_time, Some(11.0));
        assert_eq!(r.terminal_seq, Some(2));
        assert_eq!(r.conflicts, 1);
        assert_eq!(p.conflicts_total(), 1);
        assert_eq!(r.events.len(), 4);
    }

    #[test]
    fn admit_refuses_a_changed_mcp_and_reports_seen_event_ids() {
        let mut first = event(1, Action::Start, 10.0);
        first.event_id = Some("e1");
        let p = fold(&[first]);
        assert_eq!(
            p.admit("i", "other", None),
            Err(Refusal::McpMismatch { stored: "m".into() })
        );
        assert_eq!(p.admit("i", "m", Some("e1")), Ok(Admission::SeenEventId(1)));
        assert_eq!(p.admit("i", "m", Some("e2")), Ok(Admission::Append));
        assert_eq!(
            p.admit("j", "m2", Some("e1")),
            Ok(Admission::Append),
            "event ids are per mcp"
        );
    }

    fn action_strategy() -> impl Strategy<Value = Action> {
        (0usize..5).prop_map(|i| Action::ALL[i])
    }

    proptest! {
        /// Folding any permutation of an interaction's events gives the same record, except for
        /// what the rules make order-dependent: which start and which terminal event came first.
        #[test]
        fn fold_is_order_independent_where_the_rules_say_so(
            actions in proptest::collection::vec((action_strategy(), 1.0f64..1e9), 1..12),
            shuffle_seed in any::<u64>(),
        ) {
            let mut permuted = actions.clone();
            // A deterministic Fisher-Yates from the seed, so a failure replays exactly.
            let mut state = shuffle_seed | 1;
            for i in (1..permuted.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                permuted.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let as_events = |list: &[(Action, f64)]| -> Vec<StoredEvent<'static>> {
                list.iter().enumerate().map(|(i, &(a, t))| event(i as u64 + 1, a, t)).collect()
            };
            let a = fold(&as_events(&actions));
            let b = fold(&as_events(&permuted));
            let (ra, rb) = (a.get("i").unwrap(), b.get("i").unwrap());
            prop_assert_eq!(ra.events.len(), rb.events.len());
            prop_assert_eq!(ra.conflicts, rb.conflicts);
            let starts = actions.iter().filter(|(a, _)| *a == Action::Start).count();
            let terminals = actions.iter().filter(|(a, _)| a.is_terminal()).count();
            prop_assert_eq!(ra.conflicts as usize, starts.saturating_sub(1) + terminals.saturating_sub(1));
            if starts <= 1 {
                prop_assert_eq!(ra.start_time, rb.start_time);
            }
            if terminals <= 1 {
                prop_assert_eq!(ra.status, rb.status);
                prop_assert_eq!(ra.end_time, rb.end_time);
            }
            if terminals == 0 {
                let any_progress = actions.iter().any(|(a, _)| *a == Action::Progress);
                let expected = if any_progress { Status::InProgress } else { Status::Started };
                prop_assert_eq!(ra.status, expected);
            }
        }
    }
}
