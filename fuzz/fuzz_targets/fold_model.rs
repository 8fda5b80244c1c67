//! The projector's fold agrees with a model written straight from the fold rules (src/projector/mod.rs): for any sequence of
//! events over a few interactions, every record, every index and the idempotency lookups equal
//! what the model computes from the list of events alone. Revocation records among them fold into
//! nothing (the fold rule for them), so the model skips them.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mcplog::event::{revocation_record, Action, StoredEvent};
use mcplog::projector::{start_key, Projection, Status, TimeKey};

const IDS: [&str; 6] = ["i0", "i1", "i2", "i3", "i4", "i5"];
const MCPS: [&str; 3] = ["m0", "m1", "m2"];
const EVENT_IDS: [&str; 4] = ["e0", "e1", "e2", "e3"];

/// One interaction as the model sees it: its events in seq order.
#[derive(Default)]
struct Model {
    mcp: usize,
    events: Vec<(u64, Action, f64)>,
}

impl Model {
    fn first(&self, wanted: impl Fn(Action) -> bool) -> Option<&(u64, Action, f64)> {
        self.events.iter().find(|(_, action, _)| wanted(*action))
    }

    fn status(&self) -> Status {
        match self.first(Action::is_terminal).map(|e| e.1) {
            Some(Action::Complete) => Status::Completed,
            Some(Action::Error) => Status::Failed,
            Some(Action::Cancelled) => Status::Cancelled,
            _ if self.events.iter().any(|e| e.1 == Action::Progress) => Status::InProgress,
            _ => Status::Started,
        }
    }

    fn conflicts(&self) -> u32 {
        let count = |wanted: fn(Action) -> bool| self.events.iter().filter(|e| wanted(e.1)).count();
        let starts = count(|a| a == Action::Start);
        let terminals = count(Action::is_terminal);
        (starts.saturating_sub(1) + terminals.saturating_sub(1)) as u32
    }
}

fuzz_target!(|data: &[u8]| {
    let mut projection = Projection::new();
    // An interaction is (interaction id, mcp_id).
    let mut models: BTreeMap<(usize, usize), Model> = BTreeMap::new();
    let mut first_event_ids: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    // Each event takes four bytes: interaction, mcp and event id, action, timestamp; an action
    // byte from 0xF0 makes it a revocation record instead.
    for (index, chunk) in data.chunks_exact(4).enumerate() {
        let seq = index as u64 + 1;
        if chunk[2] >= 0xF0 {
            let record = revocation_record([chunk[0]; 8], f64::from(chunk[3]) + 1.0);
            projection.apply(&record.stored(seq, 0, seq * 10, [chunk[1]; 8]));
            continue;
        }
        let id = chunk[0] as usize % IDS.len();
        let mcp = chunk[1] as usize % MCPS.len();
        let event_id = (chunk[1] & 0x80 != 0).then(|| (chunk[1] >> 4) as usize % EVENT_IDS.len());
        let action = Action::ALL[chunk[2] as usize % Action::ALL.len()];
        let timestamp = f64::from(chunk[3]) * 1.5 + 1.0;
        projection.apply(&StoredEvent {
            seq,
            write_index: 0,
            received_at_us: seq * 10,
            key_id: [0; 8],
            action,
            timestamp,
            interaction_id: IDS[id],
            mcp_id: MCPS[mcp],
            event_id: event_id.map(|e| EVENT_IDS[e]),
            body: "{}",
        });
        let model = models.entry((id, mcp)).or_insert_with(|| Model { mcp, events: Vec::new() });
        model.events.push((seq, action, timestamp));
        if let Some(e) = event_id {
            first_event_ids.entry((mcp, e)).or_insert(seq);
        }
    }

    assert_eq!(projection.record_count(), models.len());
    let events: usize = models.values().map(|m| m.events.len()).sum();
    assert_eq!(projection.events_total(), events as u64);
    let mut conflicts = 0u64;
    for (&(id, mcp), model) in &models {
        let record = projection.get(MCPS[mcp], IDS[id]).expect("a record for every interaction seen");
        let start = model.first(|a| a == Action::Start);
        let terminal = model.first(Action::is_terminal);
        assert_eq!(projection.mcp_name(record.mcp()), MCPS[model.mcp]);
        assert_eq!(record.status(), model.status());
        assert_eq!(record.start_time(), start.map(|e| e.2));
        assert_eq!(record.start_seq(), start.map(|e| e.0));
        assert_eq!(record.end_time(), terminal.map(|e| e.2));
        assert_eq!(record.terminal_seq(), terminal.map(|e| e.0));
        assert_eq!(record.conflicts(), model.conflicts());
        assert_eq!(record.event_count() as usize, model.events.len());
        assert_eq!(record.first_seq(), model.events[0].0);
        assert_eq!(record.last_seq(), model.events.last().unwrap().0);
        assert_eq!(record.received_at_us(), model.events[0].0 * 10);
        let seqs: Vec<u64> = model.events.iter().map(|e| e.0).collect();
        assert_eq!(projection.events_of(record).collect::<Vec<_>>(), seqs);
        conflicts += u64::from(model.conflicts());
    }
    assert_eq!(projection.conflicts_total(), conflicts);
    for (mcp, name) in MCPS.iter().enumerate() {
        for (e, event_id) in EVENT_IDS.iter().enumerate() {
            assert_eq!(
                projection.event_seq(name, event_id),
                first_event_ids.get(&(mcp, e)).copied()
            );
        }
    }

    // The indexes, against the records they index.
    let indexes = projection.indexes();
    for (ordinal, record) in projection.records().enumerate() {
        let ordinal = ordinal as u32;
        for status in Status::ALL {
            assert_eq!(indexes.by_status[status.index()].contains(ordinal), record.status() == status);
        }
        for (mcp, bitmap) in indexes.by_mcp.iter().enumerate() {
            assert_eq!(bitmap.contains(ordinal), record.mcp() as usize == mcp);
        }
        assert_eq!(indexes.orphans.contains(ordinal), record.start_time().is_none());
        match record.start_time() {
            Some(start) => assert!(indexes.by_start.contains(&TimeKey::new(start_key(start), ordinal))),
            None => assert!(!indexes.by_start.iter().any(|entry| entry.ordinal() == ordinal)),
        }
    }
    let started = models.values().filter(|m| m.first(|a| a == Action::Start).is_some()).count();
    assert_eq!(indexes.by_start.len(), started);
});
