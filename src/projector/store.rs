//! Compact, append-only storage for the projection's millions of small things.
//!
//! A `Vec` that doubles leaves up to half its capacity unused and copies everything on each
//! growth, under the view's write lock; [`Chunked`] grows a fixed-size chunk at a time instead,
//! so memory stays within one chunk of what is used and no append ever copies old elements.
//! [`Ids`] packs interaction ids end to end into large string chunks: one allocation per MiB
//! instead of one per id, which saves the allocator's per-block overhead and a pointer per record.

/// Elements per chunk of a [`Chunked`].
pub const CHUNK_ELEMENTS: usize = 16 * 1024;

/// An append-only sequence stored in chunks of [`CHUNK_ELEMENTS`].
#[derive(Debug, Clone)]
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Chunked<T> {
        Chunked { chunks: Vec::new() }
    }
}

impl<T> Chunked<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        // Every chunk but the last is full.
        self.chunks.last().map_or(0, |last| {
            (self.chunks.len() - 1) * CHUNK_ELEMENTS + last.len()
        })
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends an element and returns its index.
    pub fn push(&mut self, value: T) -> usize {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_ELEMENTS => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_ELEMENTS);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len() - 1
    }

    /// The element at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks
            .get(index / CHUNK_ELEMENTS)?
            .get(index % CHUNK_ELEMENTS)
    }

    /// The element at `index`, mutably, if there is one.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks
            .get_mut(index / CHUNK_ELEMENTS)?
            .get_mut(index % CHUNK_ELEMENTS)
    }

    /// Every element, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        let len = self.len();
        self.get(index)
            .unwrap_or_else(|| panic!("index {index} out of range for {len} elements"))
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len();
        self.get_mut(index)
            .unwrap_or_else(|| panic!("index {index} out of range for {len} elements"))
    }
}

/// Bytes per string chunk of [`Ids`].
pub const ID_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest id [`Ids`] holds, in bytes (the length field has 12 bits).
pub const IDS_ENTRY_BYTES_MAX: usize = 4095;
// Every id the API accepts fits an entry.
const _: () = assert!(crate::event::ID_BYTES_MAX <= IDS_ENTRY_BYTES_MAX);

/// Where an id lives in [`Ids`]: chunk (32 bits), offset in it (20 bits), length (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRef(u64);

/// Ids stored end to end in string chunks of [`ID_CHUNK_BYTES`].
#[derive(Debug, Default, Clone)]
pub struct Ids {
    chunks: Vec<String>,
}

impl Ids {
    /// Stores an id. Panics past [`IDS_ENTRY_BYTES_MAX`]: validation bounds ids far below it.
    pub fn push(&mut self, id: &str) -> IdRef {
        assert!(id.len() <= IDS_ENTRY_BYTES_MAX, "id of {} bytes", id.len());
        // The id must start inside the chunk (its offset has 20 bits) and end within it.
        let fits = |chunk: &String| {
            chunk.len() < ID_CHUNK_BYTES && chunk.len() + id.len() <= ID_CHUNK_BYTES
        };
        if !self.chunks.last().is_some_and(fits) {
            self.chunks.push(String::with_capacity(ID_CHUNK_BYTES));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = chunk.len();
        // Within the capacity reserved above, so the chunk never reallocates.
        chunk.push_str(id);
        let index = u32::try_from(index).expect("fewer than 2^32 id chunks");
        IdRef(u64::from(index) << 32 | (offset as u64) << 12 | id.len() as u64)
    }

    /// The id stored at `id`.
    pub fn get(&self, id: IdRef) -> &str {
        let chunk = &self.chunks[(id.0 >> 32) as usize];
        let offset = ((id.0 >> 12) & 0xF_FFFF) as usize;
        let len = (id.0 & 0xFFF) as usize;
        &chunk[offset..offset + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunked_indexes_across_chunks() {
        let mut values = Chunked::default();
        for i in 0..CHUNK_ELEMENTS * 2 + 5 {
            assert_eq!(values.push(i * 3), i);
        }
        assert_eq!(values.len(), CHUNK_ELEMENTS * 2 + 5);
        assert_eq!(values[CHUNK_ELEMENTS], CHUNK_ELEMENTS * 3);
        values[CHUNK_ELEMENTS * 2 + 4] = 7;
        assert_eq!(values.get(CHUNK_ELEMENTS * 2 + 4), Some(&7));
        assert_eq!(values.get(CHUNK_ELEMENTS * 2 + 5), None);
        assert!(values.iter().take(10).copied().eq((0..10).map(|i| i * 3)));
    }

    proptest! {
        /// Every stored id reads back exactly, however ids fill and cross chunk boundaries.
        #[test]
        fn ids_read_back_exactly(
            ids in proptest::collection::vec("\\PC{0,64}|[a-z]{3000,4095}", 1..600),
        ) {
            let mut store = Ids::default();
            let refs: Vec<IdRef> = ids.iter().map(|id| store.push(id)).collect();
            for (id, at) in ids.iter().zip(refs) {
                prop_assert_eq!(store.get(at), id.as_str());
            }
        }
    }
}
