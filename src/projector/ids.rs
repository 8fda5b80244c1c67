//! The lookups of the projection: the id table (which record is `(mcp_id, interaction_id)`), the
//! idempotency index (which seq first used `(mcp_id, event_id)`, with a digest of its body), and
//! the interning of mcp_ids and key ids (there are few of them, and every record names one).

use std::hash::BuildHasher;

use super::store::{Chunked, Ids};
use super::Record;

/// An entry of the id index: a record's ordinal and 32 bits of its id's hash. Keeping the hash
/// lets the table grow without reading a million records and ids again to rehash them, which
/// was a fifth of start-up time; it costs four bytes per entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdSlot {
    pub(super) ordinal: u32,
    pub(super) hash: u32,
}

impl IdSlot {
    /// The table's hash of an id: 32 bits of the seeded hasher's output, repeated in both halves
    /// because the table takes its bucket from the low bits and its tag from the high ones.
    pub(super) fn hash_of(hasher: &hashbrown::DefaultHashBuilder, mcp: u32, id: &str) -> u64 {
        let full = hasher.hash_one((mcp, id));
        let bits = (full ^ (full >> 32)) & 0xFFFF_FFFF;
        bits << 32 | bits
    }

    pub(super) fn hash(&self) -> u64 {
        let bits = u64::from(self.hash);
        bits << 32 | bits
    }
}

/// `(mcp, event_id)`, owned, as stored in the idempotency index.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct EventIdKey {
    pub(super) mcp: u32,
    pub(super) event_id: Box<str>,
}

/// `(mcp, event_id)`, borrowed, for lookups without allocating. Hashes exactly as
/// [`EventIdKey`] does (derived: the u32, then the str).
#[derive(Hash)]
pub(super) struct EventIdRef<'a> {
    pub(super) mcp: u32,
    pub(super) event_id: &'a str,
}

impl hashbrown::Equivalent<EventIdKey> for EventIdRef<'_> {
    fn equivalent(&self, key: &EventIdKey) -> bool {
        self.mcp == key.mcp && self.event_id == &*key.event_id
    }
}

/// The id index: positions of records (with hash bits) by `(mcp, interaction_id)`. The hasher is
/// seeded per process, so clients cannot choose ids that collide.
#[derive(Default)]
pub(super) struct IdTable {
    slots: hashbrown::HashTable<IdSlot>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl IdTable {
    /// The table's hash of `(mcp, interaction_id)`.
    pub(super) fn hash(&self, mcp: u32, interaction_id: &str) -> u64 {
        IdSlot::hash_of(&self.hasher, mcp, interaction_id)
    }

    /// The ordinal of the record `(mcp, interaction_id)` whose hash is `hash`.
    pub(super) fn find(
        &self,
        records: &Chunked<Record>,
        ids: &Ids,
        hash: u64,
        mcp: u32,
        interaction_id: &str,
    ) -> Option<u32> {
        self.slots
            .find(hash, |slot| {
                let record = &records[slot.ordinal as usize];
                slot.hash == hash as u32
                    && record.mcp == mcp
                    && ids.get(record.interaction_id) == interaction_id
            })
            .map(|slot| slot.ordinal)
    }

    /// Adds a new record's ordinal under `hash`.
    pub(super) fn insert(&mut self, hash: u64, ordinal: u32) {
        let slot = IdSlot {
            ordinal,
            hash: hash as u32,
        };
        self.slots.insert_unique(hash, slot, IdSlot::hash);
    }
}

/// 128 bits of a body's hash: two 64-bit hashes under independent random seeds.
pub type BodyDigest = [u64; 2];

pub(super) fn digest(digesters: &[hashbrown::DefaultHashBuilder; 2], body: &str) -> BodyDigest {
    use std::hash::BuildHasher;
    [digesters[0].hash_one(body), digesters[1].hash_one(body)]
}

/// Small values given numbers in order of first appearance: mcp_ids, key ids.
#[derive(Debug)]
pub(super) struct Interned<T: std::hash::Hash + Eq + Clone> {
    values: Vec<T>,
    index: hashbrown::HashMap<T, u32>,
}

impl<T: std::hash::Hash + Eq + Clone> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: Vec::new(),
            index: hashbrown::HashMap::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Interned<T> {
    /// The number of `value`, given it now (as `to_owned(value)`) if it has none.
    pub(super) fn intern<Q>(&mut self, value: &Q, to_owned: impl FnOnce(&Q) -> T) -> u32
    where
        Q: std::hash::Hash + hashbrown::Equivalent<T> + ?Sized,
    {
        if let Some(&n) = self.index.get(value) {
            return n;
        }
        let n = u32::try_from(self.values.len()).expect("fewer than 2^32 interned values");
        let owned = to_owned(value);
        self.values.push(owned.clone());
        self.index.insert(owned, n);
        n
    }

    /// The number of `value`, if it has one.
    pub(super) fn number<Q>(&self, value: &Q) -> Option<u32>
    where
        Q: std::hash::Hash + hashbrown::Equivalent<T> + ?Sized,
    {
        self.index.get(value).copied()
    }

    /// The value numbered `n`.
    pub(super) fn get(&self, n: u32) -> &T {
        &self.values[n as usize]
    }

    /// How many values have numbers.
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
}
