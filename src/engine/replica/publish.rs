//! The publisher (the writer thread's job in cluster mode): gathers and plans a group against
//! this node's view exactly as the single node does, encodes its frames as they will sit in a
//! segment, and hands them to the [`SharedLog`] to be appended right after the last group this
//! node applied. When another node got there first it waits until the follower has applied that
//! group, plans again (events may now be duplicates or conflicts) and retries.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, RwLock};
use std::time::{Duration, Instant};

use super::{frames_bytes_max, Applied, Group, Lookup, Progress, ShareError, SharedLog};
use crate::clock::now_us;
use crate::engine::plan::{plan_group, Planned};
use crate::engine::writer_loop::{ack, gather, stored_events};
use crate::engine::{Submission, SubmitError, View};
use crate::storage::format::{self, Hash};

/// The limits of the publisher.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    /// How long a submission may wait for the shared log before it is answered 503.
    pub ingest_deadline: Duration,
    /// The most bytes of frames one group may carry (below the shared log's message limit).
    pub group_bytes_max: usize,
    /// This node's rules, and whether it publishes under them whatever the cluster's.
    pub rules: super::RulesPolicy,
}

/// The publisher: the writer thread of a node whose log is shared.
pub(in crate::engine) fn run_publisher(
    mut log: Box<dyn SharedLog>,
    view: std::sync::Arc<RwLock<View>>,
    progress: std::sync::Arc<Progress>,
    rx: mpsc::Receiver<Submission>,
    limits: PublishLimits,
) {
    // Frames are larger than bodies: count each event at its largest.
    let frame_bytes = |s: &Submission| frames_bytes_max(&s.events);
    loop {
        let first = match rx.try_recv() {
            Ok(first) => first,
            // Nothing left to offer: an earlier offer's stall no longer says anything.
            Err(mpsc::TryRecvError::Empty) => {
                progress.liveness.not_waiting();
                match rx.recv() {
                    Ok(first) => first,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        let (group, held) = gather(first, &rx, frame_bytes, limits.group_bytes_max);
        publish(&mut *log, &view, &progress, group, limits);
        if let Some(next) = held {
            publish(&mut *log, &view, &progress, vec![next], limits);
        }
    }
}

/// Plans `group` against the view, has the shared log append its frames, waits for the follower
/// to apply them and answers; plans again whenever another node's group came first.
fn publish(
    log: &mut dyn SharedLog,
    view: &RwLock<View>,
    progress: &Progress,
    group: Vec<Submission>,
    limits: PublishLimits,
) {
    // The deadline runs from when the group's oldest submission arrived, not from now.
    let oldest = group.iter().map(|s| s.queued_at).min();
    let deadline = oldest.expect("a group holds a submission") + limits.ingest_deadline;
    match offer_until_stored(log, view, progress, &group, limits, deadline) {
        // Only redaction makes frames outgrow the bound the group was gathered by: offer the
        // submissions one by one; one alone that is too large is refused.
        Published::TooLarge { .. } if group.len() > 1 => {
            for submission in group {
                publish(log, view, progress, vec![submission], limits);
            }
        }
        Published::TooLarge { bytes } => answer(
            group,
            Err(SubmitError::TooLarge {
                bytes,
                max: limits.group_bytes_max,
            }),
        ),
        Published::Answered(outcome) => answer(group, outcome),
    }
}

/// What offering a group came to.
enum Published {
    /// Stored here (the seq it begins at and its plan), or refused for every submission.
    Answered(Result<(u64, Vec<Planned>), SubmitError>),
    /// Its frames are larger than a group may be.
    TooLarge { bytes: usize },
}

/// Offers `group` until it is known to be stored here, planning it afresh whenever another
/// group took its place, or until the follower halts or `deadline` passes.
fn offer_until_stored(
    log: &mut dyn SharedLog,
    view: &RwLock<View>,
    progress: &Progress,
    group: &[Submission],
    limits: PublishLimits,
    deadline: Instant,
) -> Published {
    // The group last offered and the plan its frames carry: offered again, byte for byte, until
    // it is known to be stored here (answered from this plan) or overtaken (planned afresh).
    let mut offer: Option<Offer> = None;
    let mut reason = String::from("no answer yet");
    loop {
        if let Some(made) = offer.take() {
            match progress.applied_at(made.after + 1) {
                Some(Lookup::Applied(hash)) if hash == made.hash => {
                    return Published::Answered(Ok((made.at.next_seq, made.plans)));
                }
                // Another group took its place: it can never be stored now.
                Some(_) => {}
                None => offer = Some(made),
            }
        }
        if progress.halted().is_some() || Instant::now() >= deadline {
            return Published::Answered(Err(unavailable(progress, &reason)));
        }
        let made = match offer.take() {
            Some(made) => made,
            None => match plan_offer(view, progress, group) {
                Err(answered) => return answered,
                Ok(made) if made.group.frames.len() > limits.group_bytes_max => {
                    return Published::TooLarge {
                        bytes: made.group.frames.len(),
                    };
                }
                Ok(made) => made,
            },
        };
        if let Some(why) = append(log, progress, &made, deadline) {
            reason = why;
        }
        offer = Some(made);
    }
}

/// Plans `group` against the view and encodes the frames of what it appends as the group to
/// offer; `Err` with the answer when it is answered at once: the plan when it appends nothing
/// (all duplicates or conflicts), or the refusal when this node's rules are not the cluster's.
fn plan_offer(
    view: &RwLock<View>,
    progress: &Progress,
    group: &[Submission],
) -> Result<Offer, Published> {
    // The view and `Applied` agree: the follower changes both under the view's write lock. A
    // message skipped after `at` moves only `after`.
    let guard = view.read().expect("view lock");
    let (at, after) = progress.standing();
    // Checked against the very group the plan follows: a group with other rules applied later
    // takes this one's place, and it is planned (and checked) again.
    if let Some(message) = progress.policy.refusal(at.rules) {
        return Err(Published::Answered(Err(SubmitError::RulesDiffer {
            message,
        })));
    }
    let (plans, appended) = plan_group(&guard.projection, group, at.next_seq);
    drop(guard);
    if appended.is_empty() {
        return Err(Published::Answered(Ok((at.next_seq, plans))));
    }
    // Receive times never go backwards along the shared log.
    let now = now_us().max(at.received_at_us);
    let mut frames = Vec::new();
    for event in stored_events(group, &appended, at.next_seq, now) {
        format::encode_frame(&event, &mut frames);
    }
    let shared = Group {
        first_seq: at.next_seq,
        prev_hash: at.hash,
        frames: frames.into(),
        rules: progress.policy.fingerprint,
    };
    Ok(Offer {
        at,
        after,
        hash: shared.hash(),
        group: shared,
        plans,
    })
}

/// Offers `made` to the shared log once and waits for the follower to apply what the answer
/// says came at its place; why it is not known stored yet, if the answer gives a new reason.
fn append(
    log: &mut dyn SharedLog,
    progress: &Progress,
    made: &Offer,
    deadline: Instant,
) -> Option<String> {
    progress.liveness.offering();
    let answer = log.append(&made.group, made.after, deadline);
    if !matches!(answer, Err(ShareError::Unavailable(_))) {
        progress.liveness.not_waiting();
    }
    match answer {
        Ok(position) if position == made.after + 1 => {
            // Stored; answered once this node's follower has applied it (checked by the caller).
            (!progress.wait_for(position, deadline))
                .then(|| "applying it here took too long".into())
        }
        Ok(position) => {
            // Not proof that this group sits right after `after` (some servers answer a retry's
            // message id before the first attempt is stored): offer it again.
            std::thread::sleep(RETRY_PAUSE);
            Some(format!("the stream answered position {position}"))
        }
        Err(ShareError::Moved) => {
            progress.moved.fetch_add(1, Ordering::Relaxed);
            // Apply what came first (perhaps this very group, from an earlier attempt).
            (!progress.wait_for(made.after + 1, deadline))
                .then(|| "catching up with other nodes' groups took too long".into())
        }
        Err(ShareError::Unavailable(why)) => {
            progress.unavailable.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(RETRY_PAUSE);
            Some(why)
        }
    }
}

/// Answers every submission of `group`: its acks from the plan, or the refusal.
fn answer(group: Vec<Submission>, outcome: Result<(u64, Vec<Planned>), SubmitError>) {
    match outcome {
        Ok((next_seq, plans)) => {
            for (submission, plan) in group.into_iter().zip(plans) {
                let answer = plan
                    .map_err(SubmitError::from)
                    .map(|slots| slots.iter().map(|&slot| ack(slot, next_seq)).collect());
                submission.answer(answer);
            }
        }
        Err(err) => {
            for submission in group {
                submission.answer(Err(err.clone()));
            }
        }
    }
}

/// A group offered to the shared log, with the state it was planned against and its plan.
struct Offer {
    at: Applied,
    /// The last position read when it was planned: the group goes right after it.
    after: u64,
    group: Group,
    /// `group.hash()`, computed once.
    hash: Hash,
    plans: Vec<Planned>,
}

/// The pause before offering a group again to a shared log that could not take it.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

fn unavailable(progress: &Progress, reason: &str) -> SubmitError {
    SubmitError::Unavailable {
        message: match progress.halted() {
            Some(halted) => format!("this node stopped applying the cluster's log: {halted}"),
            None => format!("the cluster's log takes no writes now: {reason}"),
        },
    }
}
