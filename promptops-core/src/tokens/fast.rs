//! Exact counting for `cl100k_base` and `o200k_base` without a general
//! regex engine.
//!
//! tiktoken splits text with a fixed pattern per encoding and BPE-encodes
//! each piece. The two patterns are implemented here by hand, alternative by
//! alternative with the backtracking regex semantics tiktoken's
//! `fancy-regex` gives them (leftmost-first alternation, greedy or
//! possessive quantifiers, the `(?!\S)` look-ahead), over Unicode classes
//! taken from `regex-syntax`, the same tables the regex crates use.
//!
//! Each piece is then counted by, in order: a single byte (always one
//! token), the bounded count cache ([`super::cache`]), a lookup of the whole
//! piece in the vocabulary (one token), and otherwise `bpe`'s exact
//! backtracking BPE count (what `bpe-openai` runs).
//!
//! The patterns (tiktoken 0.12 / tiktoken-rs 0.12):
//!
//! cl100k_base: `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|
//! ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
//!
//! o200k_base: `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+
//! [\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|
//! ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`

use std::hash::BuildHasher;

use bpe_openai::byte_pair_encoding::BytePairEncoding;
use regex_syntax::hir::{Class, HirKind};

use super::cache::{MAX_KEY, PieceCache, key_words};

/// `\p{L}`
const L: u8 = 1;
/// `\p{N}`
const N: u8 = 2;
/// `\s` (Unicode White_Space)
const WS: u8 = 4;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` (o200k "upper")
const UP: u8 = 8;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` (o200k "lower")
const LO: u8 = 16;
/// `\r` or `\n`
const CRLF: u8 = 32;
/// Past the end of the text.
const EOT: u8 = 128;

/// Character classes of every code point: a two-level table (blocks of 256
/// code points, identical blocks shared), about 100 KiB.
struct Classes {
    ascii: [u8; 128],
    index: Vec<u16>,
    blocks: Vec<[u8; 256]>,
}

fn class_ranges(pattern: &str) -> Option<Vec<(u32, u32)>> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => Some(
            c.ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect(),
        ),
        _ => None,
    }
}

impl Classes {
    fn new() -> Option<Classes> {
        let mut flat = vec![0u8; 0x110000];
        for (pattern, flag) in [
            (r"\p{L}", L),
            (r"\p{N}", N),
            (r"\s", WS),
            (r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", UP),
            (r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", LO),
            (r"[\r\n]", CRLF),
        ] {
            for (a, b) in class_ranges(pattern)? {
                for f in &mut flat[a as usize..=b as usize] {
                    *f |= flag;
                }
            }
        }
        let mut index = Vec::with_capacity(0x1100);
        let mut blocks: Vec<[u8; 256]> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for chunk in flat.chunks_exact(256) {
            let mut block = [0u8; 256];
            block.copy_from_slice(chunk);
            let next = blocks.len();
            let i = *seen.entry(block).or_insert_with(|| {
                blocks.push(block);
                next
            });
            index.push(u16::try_from(i).ok()?);
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);
        Some(Classes {
            ascii,
            index,
            blocks,
        })
    }

    /// Class flags and byte length of the character starting at `i` of the
    /// valid UTF-8 `b`; `(EOT, 0)` at the end.
    #[inline(always)]
    fn at(&self, b: &[u8], i: usize) -> (u8, usize) {
        let Some(&b0) = b.get(i) else {
            return (EOT, 0);
        };
        if b0 < 0x80 {
            return (self.ascii[b0 as usize], 1);
        }
        let (cp, len) = decode(b, i, b0);
        let block = self.index[(cp >> 8) as usize] as usize;
        (self.blocks[block][(cp & 0xff) as usize], len)
    }

    /// End of the run of characters having any of `flags`, from `i`.
    #[inline(always)]
    fn run(&self, b: &[u8], mut i: usize, flags: u8) -> usize {
        loop {
            let (c, n) = self.at(b, i);
            if c & flags == 0 || c & EOT != 0 {
                return i;
            }
            i += n;
        }
    }
}

/// Decode the non-ASCII scalar starting at `i` (`b` is valid UTF-8).
#[inline(always)]
fn decode(b: &[u8], i: usize, b0: u8) -> (u32, usize) {
    let c = |k: usize| (b.get(i + k).copied().unwrap_or(0x80) & 0x3f) as u32;
    if b0 < 0xe0 {
        (((b0 & 0x1f) as u32) << 6 | c(1), 2)
    } else if b0 < 0xf0 {
        (((b0 & 0x0f) as u32) << 12 | c(1) << 6 | c(2), 3)
    } else {
        (
            (((b0 & 0x07) as u32) << 18 | c(1) << 12 | c(2) << 6 | c(3)).min(0x10ffff),
            4,
        )
    }
}

/// Length of a contraction suffix `(?i:s|t|re|ve|m|ll|d)` (after the
/// apostrophe) at `i`, or 0. Case-insensitive as the regex crates are:
/// Unicode simple case folding, so `s` also matches `ſ` (U+017F).
#[inline]
fn contraction(b: &[u8], i: usize) -> usize {
    let lower = |k: usize| b.get(i + k).map(|c| c.to_ascii_lowercase());
    match lower(0) {
        Some(b's' | b't' | b'm' | b'd') => 1,
        Some(b'r' | b'v') if lower(1) == Some(b'e') => 2,
        Some(b'l') if lower(1) == Some(b'l') => 2,
        Some(0xc5) if b.get(i + 1) == Some(&0xbf) => 2,
        _ => 0,
    }
}

/// Which pre-tokenization pattern.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pattern {
    Cl100k,
    O200k,
}

/// The whole vocabulary as an open-addressing hash set of token ids, to
/// answer "is this piece one token?" without running BPE. Slots hold
/// `(hash tag << 32) | (id + 1)`; 8 bytes × a power of two ≥ 2.5 × tokens.
struct Vocab {
    slots: Vec<u64>,
}

impl Vocab {
    fn new(bpe: &BytePairEncoding, hasher: &foldhash::fast::FixedState) -> Vocab {
        let n = bpe.num_tokens();
        let size = (n * 5 / 2).next_power_of_two();
        let mut slots = vec![0u64; size];
        for id in 0..n as u32 {
            let t = bpe.token_bytes(id);
            let h = piece_hash(hasher, t, &key_of(t));
            let mut i = (h as usize) & (size - 1);
            while slots[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            slots[i] = (h & !0xffff_ffff) | (id as u64 + 1);
        }
        Vocab { slots }
    }

    #[inline]
    fn contains(&self, bpe: &BytePairEncoding, piece: &[u8], key: &[u64; 3], h: u64) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return false;
            }
            if s & !0xffff_ffff == h & !0xffff_ffff {
                let token = bpe.token_bytes((s & 0xffff_ffff) as u32 - 1);
                if token.len() == piece.len()
                    && if piece.len() <= MAX_KEY {
                        key_words(token) == *key
                    } else {
                        token == piece
                    }
                {
                    return true;
                }
            }
            i = (i + 1) & mask;
        }
    }
}

/// The key words of pieces short enough for the cache (else zeros).
#[inline(always)]
fn key_of(piece: &[u8]) -> [u64; 3] {
    if piece.len() <= MAX_KEY {
        key_words(piece)
    } else {
        [0; 3]
    }
}

/// Hash of a piece: for short pieces a folded-multiply mix of its key words
/// (already loaded), else foldhash over the bytes.
#[inline(always)]
fn piece_hash(hasher: &foldhash::fast::FixedState, piece: &[u8], key: &[u64; 3]) -> u64 {
    if piece.len() > MAX_KEY {
        return hasher.hash_one(piece);
    }
    let mix = |a: u64, b: u64| {
        let r = (a as u128).wrapping_mul(b as u128);
        (r as u64) ^ ((r >> 64) as u64)
    };
    let h = mix(
        key[0] ^ 0x243f_6a88_85a3_08d3,
        key[1] ^ 0x1319_8a2e_0370_7344 ^ piece.len() as u64,
    );
    mix(h ^ key[2], 0xa409_3822_299f_31d0)
}

/// An exact token counter for one encoding.
pub struct Counter {
    pattern: Pattern,
    bpe: &'static BytePairEncoding,
    classes: Classes,
    vocab: Vocab,
    cache: PieceCache,
    hasher: foldhash::fast::FixedState,
}

impl Counter {
    /// `None` only if the Unicode class tables cannot be built (they are
    /// constant patterns; the caller falls back to `bpe-openai`).
    pub fn new(pattern: Pattern, bpe: &'static BytePairEncoding) -> Option<Counter> {
        let classes = Classes::new()?;
        let hasher = foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15);
        let vocab = Vocab::new(bpe, &hasher);
        Some(Counter {
            pattern,
            bpe,
            classes,
            vocab,
            cache: PieceCache::new(),
            hasher,
        })
    }

    /// Bytes held by the count cache (fixed at creation).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Exact token count of `text`, using and filling the piece cache.
    pub fn count(&self, text: &str) -> usize {
        self.count_with(text, true)
    }

    /// Exact token count of `text` without touching the piece cache.
    pub fn count_uncached(&self, text: &str) -> usize {
        self.count_with(text, false)
    }

    fn count_with(&self, text: &str, cached: bool) -> usize {
        let b = text.as_bytes();
        let mut i = 0;
        let mut total = 0;
        while i < b.len() {
            let e = self.next_piece(b, i);
            total += self.count_piece(&b[i..e], cached);
            i = e;
        }
        total
    }

    /// The pieces of `text` (for tests).
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let e = self.next_piece(b, i);
            // Every end is a char boundary; `get` keeps this panic-free.
            out.push(text.get(i..e).unwrap_or(""));
            i = e;
        }
        out
    }

    #[inline]
    fn count_piece(&self, piece: &[u8], cached: bool) -> usize {
        if piece.len() == 1 {
            return 1;
        }
        let key = key_of(piece);
        let h = piece_hash(&self.hasher, piece, &key);
        if cached && let Some(n) = self.cache.get(piece, &key, h) {
            return n;
        }
        let n = if self.vocab.contains(self.bpe, piece, &key, h) {
            1
        } else {
            self.bpe.count(piece)
        };
        if cached {
            self.cache.insert(piece, &key, h, n);
        }
        n
    }

    /// End of the piece starting at `i < b.len()` (always `> i`).
    #[inline]
    fn next_piece(&self, b: &[u8], i: usize) -> usize {
        let e = match self.pattern {
            Pattern::Cl100k => self.next_cl100k(b, i),
            Pattern::O200k => self.next_o200k(b, i),
        };
        // Every branch consumes at least one character; keep the loop
        // finite regardless.
        if e > i {
            e
        } else {
            i + self.classes.at(b, i).1.max(1)
        }
    }

    fn next_cl100k(&self, b: &[u8], i: usize) -> usize {
        let cls = &self.classes;
        let (c, cl) = cls.at(b, i);
        // '(?i:[sdmt]|ll|ve|re)
        if b[i] == b'\'' {
            let n = contraction(b, i + 1);
            if n > 0 {
                return i + 1 + n;
            }
        }
        // [^\r\n\p{L}\p{N}]?+\p{L}++
        if c & (L | N | CRLF) == 0 {
            let (c2, _) = cls.at(b, i + cl);
            if c2 & L != 0 && c2 & EOT == 0 {
                return cls.run(b, i + cl, L);
            }
        } else if c & L != 0 {
            return cls.run(b, i, L);
        }
        // \p{N}{1,3}+
        if c & N != 0 {
            return self.digits(b, i);
        }
        // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
        if let Some(e) = self.punct(b, i, c, false) {
            return e;
        }
        self.whitespace(b, i, true)
    }

    fn next_o200k(&self, b: &[u8], i: usize) -> usize {
        let cls = &self.classes;
        let (c, cl) = cls.at(b, i);
        // Starts to try for `[^\r\n\p{L}\p{N}]?`: with the prefix, then
        // without (backtracking).
        let with_prefix = c & (L | N | CRLF) == 0;
        let starts = [if with_prefix { Some(i + cl) } else { None }, Some(i)];
        // [^\r\n\p{L}\p{N}]?[UP]*[LO]+(?i:'s|...)?
        for s in starts.into_iter().flatten() {
            // U* greedy, then backtrack until L+ can start.
            let mut u = s;
            let mut last_lo_end = None;
            loop {
                let (cu, n) = cls.at(b, u);
                if cu & UP == 0 || cu & EOT != 0 {
                    break;
                }
                if cu & LO != 0 {
                    last_lo_end = Some(u + n);
                }
                u += n;
            }
            let (cu, _) = cls.at(b, u);
            let end = if cu & LO != 0 && cu & EOT == 0 {
                Some(cls.run(b, u, LO))
            } else {
                last_lo_end
            };
            if let Some(e) = end {
                return self.o200k_contraction(b, e);
            }
        }
        // [^\r\n\p{L}\p{N}]?[UP]+[LO]*(?i:'s|...)?
        for s in starts.into_iter().flatten() {
            let u = cls.run(b, s, UP);
            if u > s {
                let e = cls.run(b, u, LO);
                return self.o200k_contraction(b, e);
            }
        }
        // \p{N}{1,3}
        if c & N != 0 {
            return self.digits(b, i);
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n/]*'
        if let Some(e) = self.punct(b, i, c, true) {
            return e;
        }
        self.whitespace(b, i, false)
    }

    #[inline]
    fn o200k_contraction(&self, b: &[u8], e: usize) -> usize {
        if b.get(e) == Some(&b'\'') {
            let n = contraction(b, e + 1);
            if n > 0 {
                return e + 1 + n;
            }
        }
        e
    }

    /// `\p{N}{1,3}` at `i` (a number).
    fn digits(&self, b: &[u8], i: usize) -> usize {
        let mut e = i;
        for _ in 0..3 {
            let (c, n) = self.classes.at(b, e);
            if c & N == 0 || c & EOT != 0 {
                break;
            }
            e += n;
        }
        e
    }

    /// ` ?[^\s\p{L}\p{N}]+` then `[\r\n]*` (cl100k) or `[\r\n/]*` (o200k).
    fn punct(&self, b: &[u8], i: usize, c: u8, slash: bool) -> Option<usize> {
        let cls = &self.classes;
        let is_punct = |c: u8| c & (WS | L | N | EOT) == 0;
        let s = if is_punct(c) {
            i
        } else if b[i] == b' ' && is_punct(cls.at(b, i + 1).0) {
            i + 1
        } else {
            return None;
        };
        let mut e = s;
        loop {
            let (c, n) = cls.at(b, e);
            if !is_punct(c) {
                break;
            }
            e += n;
        }
        while let Some(&x) = b.get(e) {
            if x == b'\r' || x == b'\n' || (slash && x == b'/') {
                e += 1;
            } else {
                break;
            }
        }
        Some(e)
    }

    /// The whitespace alternatives at `i` (a whitespace character).
    /// cl100k: `\s++$|\s*[\r\n]|\s+(?!\S)|\s`;
    /// o200k: `\s*[\r\n]+|\s+(?!\S)|\s+`.
    fn whitespace(&self, b: &[u8], i: usize, cl100k: bool) -> usize {
        let cls = &self.classes;
        let mut j = i;
        let mut last_start = i;
        let mut last_newline = None;
        loop {
            let (c, n) = cls.at(b, j);
            if c & WS == 0 || c & EOT != 0 {
                break;
            }
            if c & CRLF != 0 {
                last_newline = Some(j + 1);
            }
            last_start = j;
            j += n;
        }
        if j == b.len() && (cl100k || last_newline.is_none()) {
            // cl100k `\s++$`; o200k `\s+(?!\S)` at the end of the text.
            return j;
        }
        if let Some(e) = last_newline {
            return e;
        }
        if last_start > i {
            // `\s+(?!\S)`: all but the last whitespace character.
            return last_start;
        }
        j
    }
}
