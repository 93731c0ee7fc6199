//! A bounded, lock-free cache of per-piece token counts.
//!
//! Text is counted piece by piece (the pieces of the encoding's
//! pre-tokenization pattern), and real text repeats its pieces: words,
//! indentation, punctuation. Counting a piece that BPE splits into several
//! tokens costs far more than looking it up, so counts of pieces are kept
//! here, like tiktoken's and gpt-tokenizer's caches.
//!
//! Memory is fixed when the cache is created and never grows: [`SLOTS`]
//! slots of 32 bytes (4 × `AtomicU64`), i.e. 16,384 entries and 512 KiB per
//! encoding. Pieces longer than [`MAX_KEY`] bytes are not cached.
//!
//! Each slot is a seqlock: readers never write shared memory (no cache-line
//! ping-pong between threads on hits) and retry nothing — a slot being
//! written reads as a miss; a writer that finds a slot busy skips the
//! insert. The key is stored in full and compared in full, so a hit is
//! always the count of exactly this piece (hash collisions only evict).
//! Buckets are two slots in one 64-byte line; a new piece takes an empty
//! slot of its bucket or evicts one chosen by a hash bit.

use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Longest piece (in bytes) the cache stores.
pub const MAX_KEY: usize = 24;
/// Number of entries (slots); a power of two.
pub const SLOTS: usize = 1 << 14;
/// Bytes of one slot.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Word 0: bits 0..32 sequence (odd while written), 32..40 key length
/// (0 = empty), 40..64 count. Words 1..4: key bytes, little-endian, zero
/// padded.
#[derive(Default)]
struct Slot {
    w: [AtomicU64; 4],
}

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    slots: [Slot; 2],
}

const SEQ_MASK: u64 = 0xffff_ffff;
const MAX_COUNT: usize = (1 << 24) - 1;

pub struct PieceCache {
    buckets: Box<[Bucket]>,
}

/// `piece` (at most [`MAX_KEY`] bytes) as three little-endian words, zero
/// padded, without a variable-length copy.
#[inline(always)]
pub fn key_words(piece: &[u8]) -> [u64; 3] {
    let mut w = [0u64; 3];
    for (i, chunk) in piece.chunks(8).take(3).enumerate() {
        w[i] = word(chunk);
    }
    w
}

/// Up to 8 bytes as a little-endian word (zero padded).
#[inline(always)]
fn word(c: &[u8]) -> u64 {
    let n = c.len();
    if let Ok(a) = <[u8; 8]>::try_from(c) {
        return u64::from_le_bytes(a);
    }
    let u32_at = |k: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&c[k..k + 4]);
        u32::from_le_bytes(a) as u64
    };
    if n >= 4 {
        // Two overlapping 4-byte reads; the overlap holds the same bytes.
        u32_at(0) | (u32_at(n - 4) << (8 * (n - 4)))
    } else {
        let mut v = 0;
        for (k, &x) in c.iter().enumerate() {
            v |= (x as u64) << (8 * k);
        }
        v
    }
}

impl Default for PieceCache {
    fn default() -> Self {
        Self::new()
    }
}

impl PieceCache {
    pub fn new() -> PieceCache {
        let buckets: Vec<Bucket> = (0..SLOTS / 2).map(|_| Bucket::default()).collect();
        PieceCache {
            buckets: buckets.into_boxed_slice(),
        }
    }

    /// Total bytes held by the cache's slots (the hard memory bound).
    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    #[inline]
    fn bucket(&self, hash: u64) -> &Bucket {
        // `buckets.len()` is a power of two.
        &self.buckets[(hash as usize) & (self.buckets.len() - 1)]
    }

    /// The cached count of `piece` (`hash` is its hash), if present.
    #[inline]
    pub fn get(&self, piece: &[u8], key: &[u64; 3], hash: u64) -> Option<usize> {
        if piece.is_empty() || piece.len() > MAX_KEY {
            return None;
        }
        let key = *key;
        let len = piece.len() as u64;
        for slot in &self.bucket(hash).slots {
            let s1 = slot.w[0].load(Ordering::Acquire);
            if s1 & 1 == 1 || (s1 >> 32) & 0xff != len {
                continue;
            }
            let k = [
                slot.w[1].load(Ordering::Relaxed),
                slot.w[2].load(Ordering::Relaxed),
                slot.w[3].load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            let s2 = slot.w[0].load(Ordering::Relaxed);
            if s1 == s2 && k == key {
                return Some((s1 >> 40) as usize);
            }
        }
        None
    }

    /// Remember that `piece` (hash `hash`) counts `count` tokens. Skipped
    /// for pieces too long to cache, or when another thread is writing the
    /// chosen slot.
    #[inline]
    pub fn insert(&self, piece: &[u8], key: &[u64; 3], hash: u64, count: usize) {
        if piece.is_empty() || piece.len() > MAX_KEY || count > MAX_COUNT {
            return;
        }
        let b = self.bucket(hash);
        let w0 = [
            b.slots[0].w[0].load(Ordering::Relaxed),
            b.slots[1].w[0].load(Ordering::Relaxed),
        ];
        // An empty slot first, else the one a hash bit picks.
        let i = if (w0[0] >> 32) & 0xff == 0 {
            0
        } else if (w0[1] >> 32) & 0xff == 0 {
            1
        } else {
            (hash >> 63) as usize
        };
        let slot = &b.slots[i];
        let s = w0[i];
        if s & 1 == 1 {
            return;
        }
        let locked = (s & !SEQ_MASK) | (s.wrapping_add(1) & SEQ_MASK);
        if slot.w[0]
            .compare_exchange(s, locked, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        slot.w[1].store(key[0], Ordering::Relaxed);
        slot.w[2].store(key[1], Ordering::Relaxed);
        slot.w[3].store(key[2], Ordering::Relaxed);
        let seq = s.wrapping_add(2) & SEQ_MASK;
        let done = seq | ((piece.len() as u64) << 32) | ((count as u64) << 40);
        slot.w[0].store(done, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &PieceCache, k: &[u8], h: u64) -> Option<usize> {
        c.get(k, &key_words(k), h)
    }

    #[test]
    fn words() {
        for n in 0..=MAX_KEY {
            let p: Vec<u8> = (1..=n as u8).collect();
            let mut buf = [0u8; MAX_KEY];
            buf[..n].copy_from_slice(&p);
            let w = key_words(&p);
            for i in 0..3 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
                assert_eq!(w[i], u64::from_le_bytes(b), "{n}");
            }
        }
    }

    #[test]
    fn bound_and_roundtrip() {
        let c = PieceCache::new();
        assert_eq!(SLOT_BYTES, 32);
        assert_eq!(c.bytes(), SLOTS * 32);
        assert_eq!(get(&c, b"hello", 7), None);
        c.insert(b"hello", &key_words(b"hello"), 7, 1);
        assert_eq!(get(&c, b"hello", 7), Some(1));
        // Same bucket, different key: never a false hit.
        assert_eq!(get(&c, b"hellp", 7), None);
        assert_eq!(get(&c, b"hello\0", 7), None);
        c.insert(b"hellp", &key_words(b"hellp"), 7, 2);
        c.insert(b"hellq", &key_words(b"hellq"), 7, 3);
        // Two ways per bucket: at most two of the three survive, all exact.
        let mut hits = 0;
        for (k, n) in [(&b"hello"[..], 1), (b"hellp", 2), (b"hellq", 3)] {
            if let Some(got) = get(&c, k, 7) {
                assert_eq!(got, n);
                hits += 1;
            }
        }
        assert_eq!(hits, 2);
        let long = [b'a'; MAX_KEY + 1];
        c.insert(&long, &key_words(&long), 9, 4);
        assert_eq!(get(&c, &long, 9), None);
        let max = [b'z'; MAX_KEY];
        c.insert(&max, &key_words(&max), 9, 5);
        assert_eq!(get(&c, &max, 9), Some(5));
    }
}
