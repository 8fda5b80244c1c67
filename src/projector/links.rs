//! The events of each interaction as one chain through the seqs.

use super::store::Chunked;

/// The events of each interaction, chained: for every seq, the distance to the next seq of the
/// same interaction (0 for its latest). Four bytes per event instead of a list per record.
#[derive(Debug, Default)]
pub(super) struct Links {
    /// Seq of `next[0]`.
    base: u64,
    next: Chunked<u32>,
    /// Links too long for a u32 delta (marked `u32::MAX` in `next`).
    far: hashbrown::HashMap<u64, u64>,
}

impl Links {
    /// Makes room for `seq`, the newest event.
    pub(super) fn push(&mut self, seq: u64) {
        if self.next.is_empty() {
            self.base = seq;
        }
        let index = usize::try_from(seq - self.base).expect("seqs arrive in order");
        assert!(
            index >= self.next.len(),
            "seq {seq} folded twice or out of order"
        );
        // Seqs are gap-free in a log; a gap (only possible in hand-made tests) leaves zeros.
        while self.next.len() <= index {
            self.next.push(0);
        }
    }

    pub(super) fn link(&mut self, from: u64, to: u64) {
        let index = (from - self.base) as usize;
        match u32::try_from(to - from) {
            Ok(delta) if delta < u32::MAX => self.next[index] = delta,
            _ => {
                self.next[index] = u32::MAX;
                self.far.insert(from, to);
            }
        }
    }

    pub(super) fn next_of(&self, seq: u64) -> Option<u64> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        match *self.next.get(index)? {
            0 => None,
            u32::MAX => self.far.get(&seq).copied(),
            delta => Some(seq + u64::from(delta)),
        }
    }
}
