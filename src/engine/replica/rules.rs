//! The rules that decide what a node stores or refuses, as one fingerprint every group carries:
//! nodes whose rules differ would store different things for the same request, so a node whose
//! rules are not the stream's refuses to publish (see [`RulesPolicy`]).

use std::time::Duration;

use sha2::{Digest, Sha256};

/// A fingerprint of the rules a group was planned and redacted under.
pub type Rules = [u8; 16];

/// What decides whether this node may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RulesPolicy {
    /// This node's rules.
    pub fingerprint: Rules,
    /// `cluster.adopt_rules`: publish under this node's rules even where the stream's last
    /// group carries others, moving the cluster to them.
    pub adopt: bool,
}

impl RulesPolicy {
    /// Why this node may not publish after a group carrying `stream`'s rules, if it may not.
    pub fn refusal(&self, stream: Option<Rules>) -> Option<String> {
        let stream = stream?;
        (stream != self.fingerprint && !self.adopt).then(|| {
            format!(
                "this node's rules (fingerprint {}) differ from the cluster's (fingerprint {}, \
                 carried by the last group applied): it stores nothing until it is given the same \
                 redaction rules, static keys and limits, or is started with cluster.adopt_rules \
                 to move the cluster to its own",
                crate::auth::hex(&self.fingerprint),
                crate::auth::hex(&stream)
            )
        })
    }
}

/// The fingerprint of everything that changes what is stored or refused: the redaction rule
/// set's version (which folds in the static keys' digests, since a node redacts the static keys
/// it knows), the largest event, the most events an interaction holds, and the clock skew an
/// event's timestamp may have. Batch limits are not in it: they split requests, not events.
pub fn fingerprint(
    redaction_version: &str,
    event_bytes_max: usize,
    interaction_events_max: usize,
    clock_skew_max: Duration,
) -> Rules {
    let described = format!(
        "rules v1\nredaction={redaction_version}\nevent_bytes_max={event_bytes_max}\n\
         interaction_events_max={interaction_events_max}\nclock_skew_max_us={}",
        clock_skew_max.as_micros()
    );
    let digest = Sha256::digest(described.as_bytes());
    let mut rules = [0; 16];
    rules.copy_from_slice(&digest[..16]);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_changes_the_fingerprint_and_only_different_rules_refuse() {
        let skew = Duration::from_secs(300);
        let base = fingerprint("abc", 1000, 10, skew);
        assert_eq!(base, fingerprint("abc", 1000, 10, skew));
        for other in [
            fingerprint("abd", 1000, 10, skew),
            fingerprint("abc", 1001, 10, skew),
            fingerprint("abc", 1000, 11, skew),
            fingerprint("abc", 1000, 10, skew * 2),
        ] {
            assert_ne!(base, other);
        }
        let mine = RulesPolicy {
            fingerprint: base,
            adopt: false,
        };
        assert_eq!(mine.refusal(None), None, "a stream without a group");
        assert_eq!(mine.refusal(Some(base)), None);
        let why = mine.refusal(Some([9; 16])).unwrap();
        assert!(why.contains(&crate::auth::hex(&base)), "{why}");
        let adopting = RulesPolicy {
            adopt: true,
            ..mine
        };
        assert_eq!(adopting.refusal(Some([9; 16])), None);
    }
}
