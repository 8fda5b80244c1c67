use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::*;
use crate::engine::maintenance::{maintain, Maintenance};
use crate::engine::{SubmitError, View};
use crate::event::{Action, StoredEvent};
use crate::projector::Projection;
use crate::storage::{open, Disk, LogConfig};

const T0_US: u64 = 1_790_000_000_000_000;

/// A follower over a fresh log in `dir`, at the start of the shared log.
fn follower_in(dir: &std::path::Path) -> Follower {
    let config = LogConfig {
        dir: dir.to_path_buf(),
        segment_max_bytes: 1 << 20,
        segment_max_age: Duration::from_secs(3600),
        disk: Disk::real(),
    };
    let mut projection = Projection::new();
    let opened = open(&config, T0_US, |e| projection.apply(e)).unwrap();
    let view = Arc::new(RwLock::new(View {
        projection,
        catalog: opened.catalog,
    }));
    let progress = Arc::new(Progress::default());
    progress.set(Applied {
        position: 0,
        hash: [0; 32],
        next_seq: opened.writer.next_seq(),
        ..Applied::default()
    });
    follower(
        opened.writer,
        view,
        progress,
        Arc::default(),
        Arc::new(tokio::sync::watch::Sender::new(0)),
        Arc::new(|_| {}),
    )
}

/// A follower in a fresh log (kept in the directory returned) that has applied a first group
/// of `count` frames, and that group.
fn started(count: u64) -> (tempfile::TempDir, Follower, Group) {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_in(dir.path());
    let first = group(1, [0; 32], frames(1, count, T0_US, "a"));
    follower.apply(1, &first).unwrap();
    (dir, follower, first)
}

/// A follower whose log already holds `held` (as a start that cut a torn group short leaves
/// it), with no group applied yet.
fn holding(held: &[u8]) -> (tempfile::TempDir, Follower) {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_in(dir.path());
    let written = follower.writer.append_encoded(held, T0_US, true);
    written.result.unwrap();
    let mut view = follower.view.write().unwrap();
    for change in written.changes {
        view.catalog.apply(change);
    }
    drop(view);
    (dir, follower)
}

fn frames(first_seq: u64, count: u64, received_at_us: u64, tag: &str) -> Vec<u8> {
    let body = format!(r#"{{"action":"interaction_progress","tag":"{tag}"}}"#);
    let mut out = Vec::new();
    for n in 0..count {
        let event = StoredEvent {
            seq: first_seq + n,
            write_index: n as u32,
            received_at_us,
            key_id: [1; 8],
            action: Action::Progress,
            timestamp: 1_790_000_000.0,
            interaction_id: "i",
            mcp_id: "m",
            event_id: None,
            body: &body,
        };
        format::encode_frame(&event, &mut out);
    }
    out
}

fn group(first_seq: u64, prev_hash: Hash, frames: Vec<u8>) -> Group {
    Group {
        first_seq,
        prev_hash,
        frames: frames.into(),
        rules: [0; 16],
    }
}

fn halted(result: Result<(), ApplyError>) -> String {
    match result {
        Err(ApplyError::Halt(reason)) => reason,
        other => panic!("expected a halt, got {other:?}"),
    }
}

/// The follower tells the engine's hook of each revocation record it appends, with the key id it
/// revokes, before it publishes the group as applied (a publisher answered for the record finds
/// the key revoked), and of no other frame.
#[test]
fn a_revocation_record_is_told_before_its_group_counts_as_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = follower_in(dir.path());
    let told = Arc::new(Mutex::new(Vec::new()));
    let (seen, progress) = (Arc::clone(&told), Arc::clone(&follower.progress));
    follower.on_revocation = Arc::new(move |id| {
        seen.lock().unwrap().push((id, progress.applied().position));
    });
    let mut bytes = frames(1, 1, T0_US, "a");
    let record = crate::event::revocation_record([5; 8], 1.0);
    format::encode_frame(&record.stored(2, 1, T0_US, [1; 8]), &mut bytes);
    follower.apply(1, &group(1, [0; 32], bytes)).unwrap();
    assert_eq!(*told.lock().unwrap(), vec![([5; 8], 0)]);
    assert_eq!(follower.progress.applied().position, 1);
}

#[test]
fn a_group_after_skipped_positions_is_applied_and_the_next_goes_after_the_last_read() {
    let (_dir, mut follower, first) = started(2);
    follower.progress.skip(2);
    follower.progress.skip(3);
    assert_eq!(follower.progress.read(), 3);
    assert_eq!(follower.progress.report().skipped, 2);
    assert_eq!(follower.progress.applied().position, 1);
    // A skipped position holds no group of this node's; a position not read yet, nothing known.
    assert_eq!(follower.progress.applied_at(2), Some(Lookup::Forgotten));
    assert_eq!(follower.progress.applied_at(4), None);
    let second = group(3, first.hash(), frames(3, 1, T0_US, "b"));
    follower.apply(4, &second).unwrap();
    assert_eq!(follower.progress.read(), 4);
    assert_eq!(follower.progress.applied().position, 4);
    assert_eq!(
        follower.progress.applied_at(4),
        Some(Lookup::Applied(second.hash()))
    );
}

#[test]
fn a_stray_message_is_skipped_and_the_group_goes_right_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, stream) = engine_with(dir.path(), &[Next::Stray], Duration::from_secs(5));
    let acks = submit(&engine, "{}").unwrap();
    assert_eq!(acks[0].seq, 1);
    assert_eq!(stream.lock().unwrap().len(), 1);
    let report = engine.replica_progress().unwrap();
    assert_eq!((report.skipped, report.applied.position), (1, 2));
    assert_eq!(report.halted, None);
}

#[test]
fn a_node_whose_rules_are_not_the_last_groups_refuses_to_publish_unless_it_adopts() {
    let mine = RulesPolicy {
        fingerprint: [1; 16],
        adopt: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let (engine, stream) = engine_under(
        dir.path(),
        &[Next::ForeignRules],
        Duration::from_secs(5),
        mine,
    );
    match submit(&engine, "{}") {
        Err(SubmitError::RulesDiffer { message }) => {
            assert!(message.contains(&crate::hex::encode(&[7; 16])), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        stream.lock().unwrap().len(),
        1,
        "only the other node's group"
    );
    assert!(engine.cluster_refusal().is_some());
    assert!(engine.replica_progress().unwrap().rules_differ.is_some());
    // Adopting, it writes under its own rules, and the stream's are its own again.
    let dir = tempfile::tempdir().unwrap();
    let adopting = RulesPolicy {
        adopt: true,
        ..mine
    };
    let (engine, stream) = engine_under(
        dir.path(),
        &[Next::ForeignRules],
        Duration::from_secs(5),
        adopting,
    );
    assert_eq!(submit(&engine, "{}").unwrap()[0].seq, 2);
    assert_eq!(stream.lock().unwrap()[1].rules, [1; 16]);
    assert_eq!(engine.cluster_refusal(), None);
}

#[test]
fn groups_in_order_are_appended_folded_and_chained() {
    let (_dir, mut follower, first) = started(3);
    let second = group(4, first.hash(), frames(4, 2, T0_US + 1, "b"));
    follower.apply(2, &second).unwrap();
    let applied = follower.progress.applied();
    assert_eq!(applied.position, 2);
    assert_eq!(applied.next_seq, 6);
    assert_eq!(applied.hash, second.hash());
    assert_ne!(first.hash(), second.hash());
    assert_eq!(follower.writer.next_seq(), 6);
    assert_eq!(follower.view.read().unwrap().projection.events_total(), 5);
    assert_eq!(*follower.durable.borrow(), 5);
}

#[test]
fn a_group_out_of_place_is_refused_naming_what_is_wrong_and_nothing_is_written() {
    let (_dir, mut follower, first) = started(2);
    let hash = first.hash();
    let cases = [
        (
            1,
            group(3, hash, frames(3, 1, T0_US, "x")),
            "expected a position after 1",
        ),
        (
            2,
            group(4, hash, frames(4, 1, T0_US, "x")),
            "first seq should be 3",
        ),
        (
            2,
            group(3, [9; 32], frames(3, 1, T0_US, "x")),
            "previous-group hash",
        ),
        (
            2,
            group(3, hash, frames(4, 1, T0_US, "x")),
            "frame 0 carries seq 4",
        ),
        (2, group(3, hash, Vec::new()), "holds no frame"),
        (
            2,
            group(3, hash, frames(3, 1, T0_US - 1, "x")),
            "before the last applied",
        ),
    ];
    for (position, bad, named) in cases {
        let reason = halted(follower.apply(position, &bad));
        assert!(reason.contains(named), "{named}: {reason}");
        assert_eq!(follower.writer.next_seq(), 3, "{named}: nothing written");
    }
    // Frames of one group must share one receive time and count their write index from 0.
    let mut mixed = frames(3, 1, T0_US, "x");
    mixed.extend(frames(4, 1, T0_US + 5, "x"));
    assert!(halted(follower.apply(2, &group(3, hash, mixed))).contains("write index"));
    let mut flipped = frames(3, 2, T0_US, "x");
    let at = flipped.len() - 3;
    flipped[at] ^= 1;
    let reason = halted(follower.apply(2, &group(3, hash, flipped)));
    assert!(
        reason.contains("frame 1 does not decode: CRC mismatch"),
        "{reason}"
    );
    let mut cut = frames(3, 2, T0_US, "x");
    cut.truncate(cut.len() - 1);
    assert!(halted(follower.apply(2, &group(3, hash, cut))).contains("cut short"));
    assert_eq!(follower.progress.applied().position, 1);
}

#[test]
fn frames_already_held_are_compared_and_only_the_rest_appended() {
    // A node whose last start kept only the first two frames of a three-frame group.
    let whole = frames(1, 3, T0_US, "a");
    let (_dir, mut follower) = holding(&frames(1, 2, T0_US, "a"));
    follower
        .apply(1, &group(1, [0; 32], whole.clone()))
        .unwrap();
    assert_eq!(follower.writer.next_seq(), 4);
    // The same again, but the held frames differ from the group's: halt.
    let (_other_dir, mut other) = holding(&frames(1, 2, T0_US, "other"));
    let reason = halted(other.apply(1, &group(1, [0; 32], whole)));
    assert!(
        reason.contains("holds a different event at seq 1"),
        "{reason}"
    );
    assert_eq!(other.writer.next_seq(), 3);
}

#[test]
fn an_empty_segment_takes_its_first_groups_time_so_nodes_agree_on_its_header() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = follower_in(one.path());
    // The second node's log was created a minute later by its own clock.
    let config = LogConfig {
        dir: two.path().to_path_buf(),
        segment_max_bytes: 1 << 20,
        segment_max_age: Duration::from_secs(3600),
        disk: Disk::real(),
    };
    drop(open(&config, T0_US + 60_000_000, |_| {}).unwrap());
    let b = follower_in(two.path());
    let g = group(1, [0; 32], frames(1, 2, T0_US + 90_000_000, "a"));
    for mut node in [a, b] {
        node.apply(1, &g).unwrap();
    }
    let bytes = |dir: &std::path::Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(one.path()), bytes(two.path()));
}

#[test]
fn the_frame_bound_covers_what_an_event_encodes_to() {
    let long = "x".repeat(crate::event::ID_BYTES_MAX);
    let event = crate::event::NewEvent::new(
        Action::Error,
        1_790_000_000.125,
        &long,
        &long,
        Some(&"e".repeat(crate::event::EVENT_ID_BYTES_MAX)),
        r#"{"k":1}"#,
    );
    let bound = frames_bytes_max(std::slice::from_ref(&event));
    let stored = event.stored(u64::MAX, u32::MAX, u64::MAX, [0xff; 8]);
    let mut out = Vec::new();
    format::encode_frame(&stored, &mut out);
    assert!(out.len() <= bound, "{} > {bound}", out.len());
}

/// What the fake shared log does with the next offer.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// Store it (if it follows the stream's last group) and answer its position.
    Store,
    /// Store it, but lose the answer.
    StoreAndLoseTheAnswer,
    /// Answer position 0 without storing it, as some servers answer a retried message id.
    AnswerZero,
    /// Another node's group lands first.
    Foreign,
    /// The shared log takes no writes.
    Silent,
    /// Another node's group, under other rules, lands first.
    ForeignRules,
    /// A message that is not an authenticated group lands first.
    Stray,
}

/// A shared log in memory that delivers every stored group to the follower, as the
/// transport does.
struct FakeLog {
    stream: Arc<Mutex<Vec<Group>>>,
    /// Messages stored, groups or not: the last position.
    last: u64,
    feed: Arc<Mutex<Option<GroupFeed>>>,
    script: std::collections::VecDeque<Next>,
}

impl FakeLog {
    fn store(&mut self, group: Group) -> u64 {
        self.stream.lock().unwrap().push(group.clone());
        self.deliver(Ok(group))
    }

    fn deliver(&mut self, message: Result<Group, String>) -> u64 {
        self.last += 1;
        let feed = self.feed.lock().unwrap();
        let feed = feed.as_ref().unwrap();
        feed.try_send((self.last, message)).unwrap();
        self.last
    }
}

impl SharedLog for FakeLog {
    fn append(&mut self, group: &Group, after: u64, _: Instant) -> Result<u64, ShareError> {
        let next = self.script.pop_front().unwrap_or(Next::Store);
        let last = self.last;
        match next {
            Next::AnswerZero => Ok(0),
            Next::Silent => Err(ShareError::Unavailable("no answer".into())),
            Next::Foreign | Next::ForeignRules => {
                let prev = self
                    .stream
                    .lock()
                    .unwrap()
                    .last()
                    .map_or([0; 32], Group::hash);
                let first_seq = group.first_seq;
                self.store(Group {
                    first_seq,
                    prev_hash: prev,
                    frames: frames(first_seq, 1, T0_US, "foreign").into(),
                    rules: if let Next::ForeignRules = next {
                        [7; 16]
                    } else {
                        group.rules
                    },
                });
                Err(ShareError::Moved)
            }
            Next::Stray => {
                self.deliver(Err("not a group".into()));
                Err(ShareError::Moved)
            }
            _ if last != after => Err(ShareError::Moved),
            Next::Store => Ok(self.store(group.clone())),
            Next::StoreAndLoseTheAnswer => {
                self.store(group.clone());
                Err(ShareError::Unavailable("the answer was lost".into()))
            }
        }
    }
}

/// An engine whose shared log follows `script`, and the stream it wrote.
fn engine_with(
    dir: &std::path::Path,
    script: &[Next],
    deadline: Duration,
) -> (super::super::Engine, Arc<Mutex<Vec<Group>>>) {
    engine_under(dir, script, deadline, RulesPolicy::default())
}

/// [`engine_with`] publishing under `rules`.
fn engine_under(
    dir: &std::path::Path,
    script: &[Next],
    deadline: Duration,
    rules: RulesPolicy,
) -> (super::super::Engine, Arc<Mutex<Vec<Group>>>) {
    let follower = follower_in(dir);
    let Follower { writer, view, .. } = follower;
    let view = Arc::try_unwrap(view).unwrap().into_inner().unwrap();
    let stream = Arc::new(Mutex::new(Vec::new()));
    let feed = Arc::new(Mutex::new(None));
    let log = FakeLog {
        stream: Arc::clone(&stream),
        last: 0,
        feed: Arc::clone(&feed),
        script: script.iter().copied().collect(),
    };
    let (engine, sender) = super::super::Engine::start_replicated(
        writer,
        view,
        100,
        Maintenance {
            interval: Duration::from_secs(3600),
            policy: crate::storage::retention::Policy {
                retention: Duration::from_secs(86_400 * 30),
                max_records: None,
                max_bytes: None,
            },
        },
        Box::new(log),
        Applied {
            next_seq: 1,
            ..Applied::default()
        },
        PublishLimits {
            ingest_deadline: deadline,
            group_bytes_max: 1 << 20,
            rules,
        },
        Arc::new(|_| {}),
    );
    *feed.lock().unwrap() = Some(sender);
    (engine, stream)
}

fn submit(
    engine: &super::super::Engine,
    body: &str,
) -> Result<Vec<super::super::Ack>, SubmitError> {
    let event = crate::event::NewEvent::new(Action::Start, 1.0, "i", "m", None, body);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(engine.submit(vec![event], [0; 8]))
        .map(|(acks, _)| acks)
}

#[test]
fn a_stored_group_whose_answer_was_lost_is_answered_once_and_never_offered_again() {
    // An event without an event_id: offered twice, it would be stored twice.
    let dir = tempfile::tempdir().unwrap();
    let (engine, stream) = engine_with(
        dir.path(),
        &[Next::StoreAndLoseTheAnswer],
        Duration::from_secs(5),
    );
    let acks = submit(&engine, "{}").unwrap();
    assert_eq!(acks[0].seq, 1);
    assert!(!acks[0].duplicate);
    assert_eq!(stream.lock().unwrap().len(), 1, "stored once");
}

#[test]
fn an_answer_that_does_not_place_the_group_is_no_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, stream) = engine_with(
        dir.path(),
        &[Next::AnswerZero, Next::AnswerZero, Next::Store],
        Duration::from_secs(5),
    );
    assert_eq!(submit(&engine, "{}").unwrap()[0].seq, 1);
    assert_eq!(stream.lock().unwrap().len(), 1);
    // Only such answers until the deadline: 503, and nothing acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let never = [Next::AnswerZero; 64];
    let (engine, stream) = engine_with(dir.path(), &never, Duration::from_millis(300));
    match submit(&engine, "{}") {
        Err(SubmitError::Unavailable { message }) => {
            assert!(message.contains("answered position 0"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(stream.lock().unwrap().is_empty());
}

#[test]
fn a_group_overtaken_by_another_nodes_is_planned_again_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, stream) = engine_with(dir.path(), &[Next::Foreign], Duration::from_secs(5));
    let acks = submit(&engine, "{}").unwrap();
    assert_eq!(acks[0].seq, 2, "after the foreign group's event");
    let stream = stream.lock().unwrap();
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[1].prev_hash, stream[0].hash());
    assert_eq!(engine.replica_progress().unwrap().moved, 1);
}

#[test]
fn the_feed_holds_at_most_its_bytes_but_always_takes_one_group() {
    let (feed, rx) = group_feed();
    let sized = |bytes: usize| Group {
        first_seq: 1,
        prev_hash: [0; 32],
        frames: vec![0u8; bytes].into(),
        rules: [0; 16],
    };
    // One group larger than the bound goes alone.
    feed.try_send((1, Ok(sized(FEED_BYTES_MAX + 1)))).unwrap();
    assert!(matches!(
        feed.try_send((2, Ok(sized(1)))),
        Err(mpsc::TrySendError::Full(_))
    ));
    let (_, taken) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    rx.taken(taken.as_ref().unwrap());
    feed.try_send((2, Ok(sized(FEED_BYTES_MAX - 10)))).unwrap();
    assert!(matches!(
        feed.try_send((3, Ok(sized(11)))),
        Err(mpsc::TrySendError::Full(_))
    ));
    feed.try_send((3, Ok(sized(10)))).unwrap();
}

#[test]
fn a_cluster_node_never_seals_an_idle_segment_on_its_own_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = follower_in(dir.path());
    node.apply(1, &group(1, [0; 32], frames(1, 2, T0_US, "a")))
        .unwrap();
    let policy = crate::storage::retention::Policy {
        retention: Duration::from_secs(86_400 * 30),
        max_records: None,
        max_bytes: None,
    };
    // Two hours later by this node's clock, past segment_max_age (1h).
    let later = T0_US + 7_200_000_000;
    maintain(&mut node.writer, &node.view, &policy, later, false);
    assert_eq!(node.view.read().unwrap().catalog.segments().len(), 1);
    // A single node would seal it.
    maintain(&mut node.writer, &node.view, &policy, later, true);
    assert_eq!(node.view.read().unwrap().catalog.segments().len(), 2);
}

/// An offer the shared log leaves unanswered for [`OFFER_STALL`] makes the node not ready, and
/// once the publisher has nothing left to offer it is ready again (the transport's watch speaks
/// for an idle node).
#[test]
fn a_node_whose_offers_go_unanswered_is_not_ready_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = engine_with(dir.path(), &[Next::Silent; 1000], OFFER_STALL * 3);
    assert_eq!(engine.cluster_readiness(0), Err(NotReady::EndUnknown));
    engine.saw_shared_log_end(0);
    assert_eq!(engine.cluster_readiness(0), Ok(()));
    let engine = Arc::new(engine);
    let waiting = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || submit(&engine, r#"{"n":1}"#))
    };
    std::thread::sleep(OFFER_STALL + Duration::from_millis(500));
    assert!(
        matches!(engine.cluster_readiness(0), Err(NotReady::Stalled(_))),
        "{:?}",
        engine.cluster_readiness(0)
    );
    assert!(matches!(
        waiting.join().unwrap(),
        Err(SubmitError::Unavailable { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.cluster_readiness(0).is_err() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            engine.cluster_readiness(0)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Anyone who can publish on the stream can publish an applied group's message again, MAC and
/// all: a byte-for-byte copy is skipped and the history goes on; an authenticated group that
/// differs from what this node holds at those seqs still halts.
#[test]
fn a_copy_of_an_applied_group_is_skipped_and_a_different_one_halts() {
    let (_dir, mut follower, first) = started(2);
    let second = group(3, first.hash(), frames(3, 1, T0_US + 1, "b"));
    follower.apply(2, &second).unwrap();
    match follower.apply(3, &first) {
        Err(ApplyError::Copy(why)) => assert!(why.contains("seqs 1 to 2"), "{why}"),
        other => panic!("expected a copy, got {other:?}"),
    }
    assert_eq!(follower.progress.applied().position, 2);
    let third = group(4, second.hash(), frames(4, 1, T0_US + 2, "c"));
    follower.apply(4, &third).unwrap();
    assert_eq!(follower.writer.next_seq(), 5);
    let altered = group(1, [0; 32], frames(1, 2, T0_US, "z"));
    let reason = halted(follower.apply(5, &altered));
    assert!(reason.contains("different event at seq 1"), "{reason}");
}
