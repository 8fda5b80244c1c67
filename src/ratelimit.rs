//! Per-key rate limits on ingest: a token bucket per API key (governor's GCRA), in events per
//! second with a burst. A static key's own quota comes first, then its role's (`[rate_limits]`
//! in the configuration); a key with neither is not limited. A batch costs as many tokens as it
//! holds events. Nothing here knows HTTP.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota};

use crate::auth::{KeyId, Principal, Role};

/// Most keys with a bucket at once. Past it every bucket is dropped and begins again full: keys
/// are few in practice, and the cost of the reset is at most one burst per key.
pub const BUCKETED_KEYS_MAX: usize = 65_536;

/// A rate: `events_per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Events per second, sustained.
    pub events_per_second: NonZeroU32,
    /// Events at once, after an idle spell; also the largest batch the key may send.
    pub burst: NonZeroU32,
}

impl Quota {
    /// A quota; `burst` defaults to one second's worth.
    pub fn new(events_per_second: u32, burst: Option<u32>) -> Result<Quota, String> {
        let events_per_second =
            NonZeroU32::new(events_per_second).ok_or("events_per_second must be at least 1")?;
        let burst = match burst {
            None => events_per_second,
            Some(n) => NonZeroU32::new(n).ok_or("burst must be at least 1")?,
        };
        Ok(Quota {
            events_per_second,
            burst,
        })
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events per second (burst {})",
            self.events_per_second, self.burst
        )
    }
}

/// Why events were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    /// Over the quota now; tokens come back after `retry_after`.
    #[error("this key is limited to {quota}; retry in {retry_after:?}")]
    Later {
        /// The key's quota.
        quota: Quota,
        /// When enough tokens will be back.
        retry_after: Duration,
    },
    /// More events in one request than the burst: never admissible as one request.
    #[error("this request holds {events} events, more than this key's burst: {quota}")]
    OverBurst {
        /// The key's quota.
        quota: Quota,
        /// Events in the request.
        events: u32,
    },
}

/// The quotas, and a bucket per key that has sent events.
#[derive(Debug, Default)]
pub struct RateLimits {
    by_role: HashMap<Role, Quota>,
    by_key: HashMap<KeyId, Quota>,
    buckets: Mutex<HashMap<KeyId, (Quota, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    /// Limits from the per-role defaults and the static keys' own quotas.
    pub fn new(by_role: HashMap<Role, Quota>, by_key: HashMap<KeyId, Quota>) -> RateLimits {
        RateLimits {
            by_role,
            by_key,
            buckets: Mutex::default(),
        }
    }

    /// Whether any key is limited.
    pub fn is_empty(&self) -> bool {
        self.by_role.is_empty() && self.by_key.is_empty()
    }

    /// The quota of a caller, if it has one.
    pub fn quota_of(&self, principal: &Principal) -> Option<Quota> {
        self.by_key
            .get(&principal.key_id)
            .or_else(|| self.by_role.get(&principal.role))
            .copied()
    }

    /// Takes `events` tokens from the caller's bucket, or says why not (and takes none).
    pub fn check(&self, principal: &Principal, events: u32) -> Result<(), Limited> {
        self.check_more(principal, 0, events)
    }

    /// Takes `more` tokens for a request that has taken `taken` already, or says why not (and
    /// takes none more): a request is over the burst by all it costs, however it was charged.
    pub fn check_more(&self, principal: &Principal, taken: u32, more: u32) -> Result<(), Limited> {
        if self.is_empty() {
            // Nothing configured, the default: no lookup on the ingest path.
            return Ok(());
        }
        let Some(quota) = self.quota_of(principal) else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(more) else {
            return Ok(());
        };
        let events = taken.saturating_add(more);
        if events > quota.burst.get() {
            return Err(Limited::OverBurst { quota, events });
        }
        let bucket = self.bucket(principal.key_id, quota);
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            // The tokens this request took already are spent, and its retry takes them again:
            // the wait covers those too, so a client that waits exactly this long gets through.
            Ok(Err(not_until)) => Err(Limited::Later {
                quota,
                retry_after: not_until.wait_time_from(DefaultClock::default().now())
                    + Duration::from_secs_f64(
                        f64::from(taken) / f64::from(quota.events_per_second.get()),
                    ),
            }),
            Err(_) => Err(Limited::OverBurst { quota, events }),
        }
    }

    fn bucket(&self, key_id: KeyId, quota: Quota) -> Arc<DefaultDirectRateLimiter> {
        let mut buckets = self.buckets.lock().expect("bucket lock");
        if let Some((q, bucket)) = buckets.get(&key_id) {
            if *q == quota {
                return Arc::clone(bucket);
            }
        }
        if buckets.len() >= BUCKETED_KEYS_MAX {
            buckets.clear();
        }
        let limiter = Arc::new(DefaultDirectRateLimiter::direct(
            GovernorQuota::per_second(quota.events_per_second).allow_burst(quota.burst),
        ));
        buckets.insert(key_id, (quota, Arc::clone(&limiter)));
        limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, key: u8) -> Principal {
        Principal {
            role,
            mcp_id: None,
            key_id: [key; 8],
            expires_at: None,
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_untouched() {
        let writer_quota = Quota::new(10, Some(20)).unwrap();
        let own = Quota::new(1, Some(5)).unwrap();
        let limits = RateLimits::new(
            HashMap::from([(Role::Writer, writer_quota)]),
            HashMap::from([([9; 8], own)]),
        );
        let a = principal(Role::Writer, 1);
        assert_eq!(limits.check(&a, 15), Ok(()));
        assert_eq!(limits.check(&a, 5), Ok(()));
        let Err(Limited::Later { quota, retry_after }) = limits.check(&a, 1) else {
            panic!("the burst is spent")
        };
        assert_eq!(quota, writer_quota);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
        // Another writer key has its own bucket; a key's own quota beats its role's.
        assert_eq!(limits.check(&principal(Role::Writer, 2), 20), Ok(()));
        let special = principal(Role::Writer, 9);
        assert_eq!(
            limits.check(&special, 6),
            Err(Limited::OverBurst {
                quota: own,
                events: 6
            })
        );
        assert_eq!(limits.check(&special, 5), Ok(()));
        // A role with no quota is not limited.
        assert_eq!(limits.check(&principal(Role::Admin, 3), 1_000_000), Ok(()));
    }

    #[test]
    fn past_bucketed_keys_max_every_bucket_begins_again_full() {
        let quota = Quota::new(1, Some(1)).unwrap();
        let limits = RateLimits::new(HashMap::from([(Role::Writer, quota)]), HashMap::new());
        let keyed = |n: u64| Principal {
            key_id: n.to_le_bytes(),
            ..principal(Role::Writer, 0)
        };
        assert_eq!(limits.check(&keyed(0), 1), Ok(()));
        assert!(
            limits.check(&keyed(0), 1).is_err(),
            "its one token is spent"
        );
        for n in 1..BUCKETED_KEYS_MAX as u64 {
            assert_eq!(limits.check(&keyed(n), 1), Ok(()));
        }
        assert_eq!(limits.buckets.lock().unwrap().len(), BUCKETED_KEYS_MAX);
        assert_eq!(limits.check(&keyed(u64::MAX), 1), Ok(()));
        assert_eq!(
            limits.buckets.lock().unwrap().len(),
            1,
            "the map was cleared"
        );
        assert_eq!(
            limits.check(&keyed(0), 1),
            Ok(()),
            "a key's bucket begins again full"
        );
    }

    #[test]
    fn quotas_refuse_zero() {
        assert!(Quota::new(0, None).is_err());
        assert!(Quota::new(1, Some(0)).is_err());
        assert_eq!(Quota::new(7, None).unwrap().burst.get(), 7);
    }

    #[test]
    fn a_request_is_over_the_burst_by_all_it_costs_however_it_is_charged() {
        let quota = Quota::new(10, Some(10)).unwrap();
        let limits = RateLimits::new(HashMap::from([(Role::Writer, quota)]), HashMap::new());
        let a = principal(Role::Writer, 9);
        assert_eq!(limits.check_more(&a, 0, 1), Ok(()));
        assert_eq!(
            limits.check_more(&a, 1, 10),
            Err(Limited::OverBurst { quota, events: 11 })
        );
        // Refused whole: the tokens it did not take are still there.
        assert_eq!(limits.check_more(&a, 1, 9), Ok(()));
    }

    /// A request refused after its first token was taken is told to wait long enough for all it
    /// costs, that token included: waiting exactly `Retry-After` gets it through.
    #[test]
    fn waiting_as_told_lets_a_request_charged_in_two_steps_through() {
        let quota = Quota::new(20, Some(3)).unwrap();
        let limits = RateLimits::new(HashMap::from([(Role::Writer, quota)]), HashMap::new());
        let a = principal(Role::Writer, 7);
        assert_eq!(limits.check_more(&a, 0, 3), Ok(()));
        // A batch of 3: one token before its body, two once counted.
        let mut refusals = 0;
        loop {
            let refused = limits
                .check_more(&a, 0, 1)
                .and_then(|()| limits.check_more(&a, 1, 2));
            match refused {
                Ok(()) => break,
                Err(Limited::Later { retry_after, .. }) => {
                    refusals += 1;
                    assert!(refusals <= 2, "refused again after waiting as told");
                    std::thread::sleep(retry_after);
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
}
