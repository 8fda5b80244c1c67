//! Whether a cluster node can write now: what its transport reports of the shared log (reachable,
//! and how far it reaches), and whether the publisher's offers are being taken. `/readyz`
//! answers from [`Liveness::readiness`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an offer may wait for the shared log before this node counts as unable to write: a
/// healthy append is answered in milliseconds and a stream leader's election takes a few
/// seconds, so an offer unanswered for this long means writes through this node stall.
pub const OFFER_STALL: Duration = Duration::from_secs(2);

/// What the transport and the publisher last reported.
#[derive(Debug, Default)]
pub struct Liveness {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Why the shared log cannot be reached now, if it cannot.
    unreachable: Option<String>,
    /// The last position the shared log was seen to hold; `None` until the transport learns it.
    end: Option<u64>,
    /// Since when this node's offers have waited for the shared log without one being taken;
    /// `None` while the publisher is idle or the last offer was taken.
    waiting_since: Option<Instant>,
}

/// Why a cluster node is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The follower halted for good, with its reason.
    Halted(String),
    /// The transport cannot reach the shared log.
    Unreachable(String),
    /// The shared log has taken none of this node's offers for this long.
    Stalled(Duration),
    /// The shared log's end is not known yet (the node has just started).
    EndUnknown,
    /// The follower is further behind the shared log's end than the ready lag.
    CatchingUp {
        /// The last position applied.
        applied: u64,
        /// The stream's last position, as last seen.
        end: u64,
        /// `cluster.ready_lag_groups`.
        lag_max: u64,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Halted(why) => write!(f, "halted: {why}"),
            NotReady::Unreachable(why) => write!(f, "cluster unreachable: {why}"),
            NotReady::Stalled(waited) => write!(
                f,
                "cluster takes no writes: an offer has waited {:.1} s for the stream",
                waited.as_secs_f64()
            ),
            NotReady::EndUnknown => write!(f, "catching up: the stream's end is not known yet"),
            NotReady::CatchingUp {
                applied,
                end,
                lag_max,
            } => write!(
                f,
                "catching up: applied position {applied} of the stream's {end} \
                 (ready within {lag_max} groups)"
            ),
        }
    }
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("liveness lock")
    }

    /// The transport reached the shared log (`Ok`) or cannot (`Err` with why).
    pub fn set_reachable(&self, reachable: Result<(), String>) {
        self.lock().unreachable = reachable.err();
    }

    /// The transport saw the shared log hold groups up to `position`. Positions only grow, so
    /// an older sighting arriving late never lowers the end.
    pub fn saw_end(&self, position: u64) {
        let mut state = self.lock();
        state.end = Some(state.end.map_or(position, |end| end.max(position)));
    }

    /// The publisher offers a group (again): the stall clock starts unless it runs already.
    pub(super) fn offering(&self) {
        self.lock().waiting_since.get_or_insert_with(Instant::now);
    }

    /// The shared log answered an offer (stored it, or another group came first), or the
    /// publisher has nothing left to offer: no stall.
    pub(super) fn not_waiting(&self) {
        self.lock().waiting_since = None;
    }

    /// Ready, or why not, for a follower at `applied` (halted with `halted`) that must be
    /// within `lag_max` groups of the shared log's end.
    pub fn readiness(
        &self,
        applied: u64,
        halted: Option<String>,
        lag_max: u64,
        now: Instant,
    ) -> Result<(), NotReady> {
        if let Some(why) = halted {
            return Err(NotReady::Halted(why));
        }
        let state = self.lock();
        if let Some(why) = &state.unreachable {
            return Err(NotReady::Unreachable(why.clone()));
        }
        if let Some(waited) = state
            .waiting_since
            .map(|since| now.saturating_duration_since(since))
        {
            if waited >= OFFER_STALL {
                return Err(NotReady::Stalled(waited));
            }
        }
        let end = state.end.ok_or(NotReady::EndUnknown)?;
        if end.saturating_sub(applied) > lag_max {
            return Err(NotReady::CatchingUp {
                applied,
                end,
                lag_max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_reachable_unstalled_and_caught_up() {
        let live = Liveness::default();
        let now = Instant::now();
        assert_eq!(live.readiness(0, None, 10, now), Err(NotReady::EndUnknown));
        live.saw_end(100);
        live.saw_end(40); // a late, older sighting
        let behind = live.readiness(89, None, 10, now).unwrap_err();
        assert_eq!(
            behind,
            NotReady::CatchingUp {
                applied: 89,
                end: 100,
                lag_max: 10
            }
        );
        assert!(behind
            .to_string()
            .contains("applied position 89 of the stream's 100"));
        assert_eq!(live.readiness(90, None, 10, now), Ok(()));
        assert!(matches!(
            live.readiness(90, Some("bad group".into()), 10, now),
            Err(NotReady::Halted(why)) if why == "bad group"
        ));
        live.set_reachable(Err("disconnected".into()));
        assert_eq!(
            live.readiness(100, None, 10, now),
            Err(NotReady::Unreachable("disconnected".into()))
        );
        live.set_reachable(Ok(()));
        assert_eq!(live.readiness(100, None, 10, now), Ok(()));
    }

    #[test]
    fn an_offer_unanswered_for_the_stall_time_is_not_ready_until_answered_or_idle() {
        let live = Liveness::default();
        live.saw_end(5);
        live.offering();
        let start = Instant::now();
        assert_eq!(live.readiness(5, None, 0, start), Ok(()));
        live.offering(); // offered again: the clock keeps running
        let later = start + OFFER_STALL + Duration::from_millis(1);
        assert!(matches!(
            live.readiness(5, None, 0, later),
            Err(NotReady::Stalled(_))
        ));
        live.not_waiting();
        assert_eq!(live.readiness(5, None, 0, later), Ok(()));
    }
}
