//! Cairn's content-defined chunking: the FastCDC v2020 cut-point search of the `fastcdc` crate
//! (5.0.0, `v2020::FastCDC`), same cuts, run as several independent lanes at once. A crate of its
//! own so that it is optimised in every build profile: this loop is the hot path of every push,
//! and unoptimised it is 20× slower, which tests that push tens of MiB feel.
//!
//! The crate hashes from `min` on, two bytes a step: `h = (h << 2) + GEAR_LS[b0]`, tested against
//! `mask << 1`, then `h += GEAR[b1]`, tested against `mask` (`mask_s` before `center`, `mask_l`
//! from there); the first hit is the cut, none means a cut at `min(len, max)`. Each step waits on
//! the one before (shift, add, add), and that chain bounds its speed. But the shift pushes a
//! byte's contribution out of the 64-bit hash 64 bytes later, so the hash at any position is
//! fully determined by the (up to) 64 bytes before it, counted from `min`. So blocks of the
//! search range can be hashed independently, each lane starting from 0 on the 64 bytes before its
//! block; the CPU overlaps the lanes' chains, and the lowest lane with a hit holds the cut.

use std::borrow::Cow;
use std::ops::ControlFlow;

use fastcdc::v2020::{Normalization, get_gear_with_seed, select_masks};

/// FastCDC's normalization level for [`Cutter::new`]: part of the chunking scheme like the sizes
/// (the daemon's `chunker::NORMALIZATION` says which and why).
pub const NORMALIZATION: Normalization = Normalization::Level2;

/// Lanes hashed side by side. Four keep all hashes, pointers and masks in registers.
const LANES: usize = 4;
/// Byte pairs a lane hashes, untested, before its block: a byte has left the hash 64 bytes on.
const WARM: usize = 32;
/// The fewest pairs per lane block worth the warm-up; shorter ranges are scanned serially.
const MIN_BLOCK: usize = 64;

/// Finds cut points exactly where `fastcdc::v2020::FastCDC` (5.0.0) with the same sizes and
/// [`NORMALIZATION`] does.
#[derive(Clone, Copy, Debug)]
pub struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: &'static [u64; 256],
    gear_ls: &'static [u64; 256],
}

impl Cutter {
    /// FastCDC v2020 size limits in bytes: all three even, `min <= avg <= max` (the daemon's
    /// `ChunkParams`, checked there).
    pub fn new(min: u32, avg: u32, max: u32) -> Self {
        let (mask_s, mask_l) = select_masks(avg as usize, NORMALIZATION);
        Self::with_masks(min as usize, avg as usize, max as usize, mask_s, mask_l)
    }

    /// The crate's `v2020::cut` (its default GEAR tables) with these sizes and masks.
    fn with_masks(min: usize, avg: usize, max: usize, mask_s: u64, mask_l: u64) -> Self {
        let (gear, gear_ls) = tables();
        Cutter {
            min,
            avg,
            max,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    /// Length of the first chunk of `source`: all of it when it is at most `min` long.
    pub fn cut(&self, source: &[u8]) -> usize {
        let len = source.len();
        if len <= self.min {
            return len;
        }
        let (remaining, center) = if len > self.max {
            (self.max, self.avg)
        } else {
            (len, self.avg.min(len))
        };
        // The crate tests byte pairs from pair `min / 2`, with `mask_s` below pair `center / 2`
        // and `mask_l` below pair `remaining / 2`; an odd `remaining`'s last byte is never tested.
        let (pairs, _) = source[..remaining].as_chunks::<2>();
        // Clamped for sizes `check_params` refuses (the crate returns `remaining` for min > max).
        let first = (self.min / 2).min(pairs.len());
        let split = (center / 2).clamp(first, pairs.len());
        let scan = Scan {
            pairs,
            first,
            gear: self.gear,
            gear_ls: self.gear_ls,
        };
        // The crate's hash starts at 0 on pair `first` and runs on across `split`.
        let found = match scan.search(first, split, self.mask_s, 0) {
            ControlFlow::Continue(h) => scan.search(split, pairs.len(), self.mask_l, h),
            cut => cut,
        };
        match found {
            ControlFlow::Break(cut) => cut,
            ControlFlow::Continue(_) => remaining,
        }
    }
}

/// The crate's GEAR table and its left-shifted twin, borrowed from it.
fn tables() -> (&'static [u64; 256], &'static [u64; 256]) {
    let (Cow::Borrowed(gear), Cow::Borrowed(gear_ls)) = get_gear_with_seed(0) else {
        unreachable!("seed 0 borrows the crate's static tables")
    };
    let table = |t: &'static [u64]| -> &'static [u64; 256] {
        t.try_into().expect("GEAR tables have 256 entries")
    };
    (table(gear), table(gear_ls))
}

/// Pairs per lane block for `mask`: the mean distance between hits (2^popcount bytes) / 16, so a
/// block is 1/8 and a group of LANES blocks 1/2 of it (at most 4096 pairs, see `search`): a hit
/// rarely strands much work in the earlier lanes. Under [`MIN_BLOCK`], hits are too close for
/// lanes to pay off.
fn block_pairs(mask: u64) -> usize {
    usize::try_from((1u64 << mask.count_ones().min(40)) / 16).unwrap_or(usize::MAX)
}

struct Scan<'a> {
    /// The bytes up to `remaining` as pairs; pair `i` holds bytes `2i` and `2i + 1`.
    pairs: &'a [[u8; 2]],
    /// The pair the crate starts hashing at (`min / 2`); nothing before it counts.
    first: usize,
    gear: &'static [u64; 256],
    gear_ls: &'static [u64; 256],
}

/// A search step's outcome: `Break(cut)`, the chunk length, or `Continue(hash)`, the crate's hash
/// after the pairs searched.
type Step = ControlFlow<usize, u64>;

impl Scan<'_> {
    /// The first cut among pairs `at..hi` under `mask`, `h` being the crate's hash before pair `at`.
    fn search(&self, mut at: usize, hi: usize, mask: u64, mut h: u64) -> Step {
        let block = block_pairs(mask);
        // Lanes warm up on the WARM pairs before their block; those must not reach before `first`.
        let lanes_from = self.first + WARM;
        while at < hi {
            let b = block.min((hi - at) / LANES);
            if b < MIN_BLOCK {
                return self.resume(h, at, hi, mask);
            }
            if at < lanes_from {
                h = self.resume(h, at, lanes_from, mask)?;
                at = lanes_from;
                continue;
            }
            (h, at) = match b {
                4096.. => (self.lanes::<4096>(at, mask)?, at + LANES * 4096),
                1024.. => (self.lanes::<1024>(at, mask)?, at + LANES * 1024),
                256.. => (self.lanes::<256>(at, mask)?, at + LANES * 256),
                _ => (self.lanes::<MIN_BLOCK>(at, mask)?, at + LANES * MIN_BLOCK),
            };
        }
        ControlFlow::Continue(h)
    }

    /// The crate's loop over pairs `from..to`, from its hash `h` before pair `from`.
    fn resume(&self, mut h: u64, from: usize, to: usize, mask: u64) -> Step {
        let (g, gl) = (self.gear, self.gear_ls);
        let mask_ls = mask << 1;
        for (i, &[a, b]) in (from..to).zip(&self.pairs[from..to]) {
            h = (h << 2).wrapping_add(gl[a as usize]);
            if h & mask_ls == 0 {
                return ControlFlow::Break(2 * i);
            }
            h = h.wrapping_add(g[b as usize]);
            if h & mask == 0 {
                return ControlFlow::Break(2 * i + 1);
            }
        }
        ControlFlow::Continue(h)
    }

    /// Pairs `at..at + LANES * B` as LANES blocks of `B` pairs hashed in lockstep, each from 0 on
    /// the WARM pairs before it: the first cut, or the crate's hash after the last pair.
    fn lanes<const B: usize>(&self, at: usize, mask: u64) -> Step {
        let (g, gl) = (self.gear, self.gear_ls);
        let mask_ls = mask << 1;
        // Lane `k`'s pair `j` is `window[k * B + j]`, its block starting at `j = WARM`.
        let window = &self.pairs[at - WARM..at + LANES * B];
        let mut h = [0u64; LANES];
        for j in 0..WARM {
            for (k, h) in h.iter_mut().enumerate() {
                let [x, y] = window[k * B + j];
                *h = (*h << 2)
                    .wrapping_add(gl[x as usize])
                    .wrapping_add(g[y as usize]);
            }
        }
        for j in WARM..WARM + B {
            for k in 0..LANES {
                let [x, y] = window[k * B + j];
                h[k] = (h[k] << 2).wrapping_add(gl[x as usize]);
                if h[k] & mask_ls == 0 {
                    return ControlFlow::Break(self.settle(at, B, &h, k, j, 0, mask));
                }
                h[k] = h[k].wrapping_add(g[y as usize]);
                if h[k] & mask == 0 {
                    return ControlFlow::Break(self.settle(at, B, &h, k, j, 1, mask));
                }
            }
        }
        ControlFlow::Continue(h[LANES - 1])
    }

    /// Lane `k` hit at its pair `j` (byte `odd` of it). The lanes before it have no hit up to
    /// their pair `j` but may have one after, which comes first: finish them in order.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        at: usize,
        b: usize,
        h: &[u64; LANES],
        k: usize,
        j: usize,
        odd: usize,
        mask: u64,
    ) -> usize {
        let pair = |lane: usize, j: usize| at + lane * b + j - WARM;
        for (lane, &h) in h.iter().enumerate().take(k) {
            let end = pair(lane, WARM + b);
            if let ControlFlow::Break(cut) = self.resume(h, pair(lane, j + 1), end, mask) {
                return cut;
            }
        }
        2 * pair(k, j) + odd
    }
}

#[cfg(test)]
mod tests_support {
    /// The sizes as the tests pass them around.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct ChunkParams {
        pub min: u32,
        pub avg: u32,
        pub max: u32,
    }

    /// Cairn's default sizes: 512 KiB / 1 MiB / 4 MiB.
    pub(super) const DEFAULT: ChunkParams = ChunkParams {
        min: 512 << 10,
        avg: 1 << 20,
        max: 4 << 20,
    };

    /// Deterministic bytes: xorshift64* from `seed`.
    pub(super) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use fastcdc::v2020::{self, FastCDC};
    use proptest::prelude::*;

    use super::tests_support::{ChunkParams, DEFAULT, pseudo_random};
    use super::*;

    /// The chunker tests' small sizes.
    const SMALL: ChunkParams = ChunkParams {
        min: 2 * 1024,
        avg: 8 * 1024,
        max: 32 * 1024,
    };
    /// The smallest sizes FastCDC v2020 allows: many chunks, short lane ranges.
    const TINY: ChunkParams = ChunkParams {
        min: 64,
        avg: 256,
        max: 1024,
    };

    /// Test inputs of `len` bytes: 0 random, 1 zeros, 2 a short pattern repeated, 3 two distinct
    /// byte values, 4 random with runs of zeros and of one repeated byte.
    fn input(kind: u8, len: usize, seed: u64) -> Vec<u8> {
        let r = pseudo_random(len, seed);
        match kind % 5 {
            0 => r,
            1 => vec![0; len],
            2 => {
                let period = 1 + (seed % 300) as usize;
                let pattern = pseudo_random(period, seed ^ 0x5eed);
                (0..len).map(|i| pattern[i % period]).collect()
            }
            3 => {
                let (a, b) = ((seed >> 8) as u8, (seed >> 16) as u8 | 1);
                r.iter()
                    .map(|&x| if x & 1 == 0 { a } else { b ^ a })
                    .collect()
            }
            _ => {
                let mut d = r;
                let mut at = 0;
                while at < len {
                    let run = 1 + (d[at] as usize * 37) % 5_000;
                    let end = (at + run).min(len);
                    let fill = if d[at] & 1 == 0 { 0 } else { d[at] };
                    d[at..end].fill(fill);
                    at = end + run;
                }
                d
            }
        }
    }

    /// Chunk lengths by the crate's iterator, as `chunker::cdc` builds it.
    fn crate_lengths(data: &[u8], p: ChunkParams) -> Vec<usize> {
        FastCDC::with_level(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            NORMALIZATION,
        )
        .map(|c| c.length)
        .collect()
    }

    /// Chunk lengths by repeated [`Cutter::cut`].
    fn lengths(data: &[u8], p: ChunkParams) -> Vec<usize> {
        let cutter = Cutter::new(p.min, p.avg, p.max);
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = cutter.cut(rest);
            assert!(n > 0, "an empty chunk of a non-empty input");
            out.push(n);
            rest = &rest[n..];
        }
        out
    }

    fn same_cuts(data: &[u8], p: ChunkParams) -> Result<(), TestCaseError> {
        let ours = lengths(data, p);
        let theirs = crate_lengths(data, p);
        prop_assert_eq!(ours, theirs, "len {} params {:?}", data.len(), p);
        Ok(())
    }

    /// Valid sizes (as `check_params` wants them), kept small so inputs hold many chunks.
    fn params() -> impl Strategy<Value = ChunkParams> {
        let random = (32u32..4096, 0u32..8192, 0u32..32768).prop_map(|(a, b, c)| {
            let min = 2 * a;
            let avg = min.max(256) + 2 * b;
            let max = avg.max(1024) + 2 * c;
            ChunkParams { min, avg, max }
        });
        prop_oneof![Just(SMALL), Just(TINY), random]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn cuts_match_the_crate(
            p in params(),
            kind in 0u8..5,
            seed in any::<u64>(),
            len_per_max in 0.0f64..4.0,
            odd in any::<bool>(),
        ) {
            let len = (len_per_max * p.max as f64) as usize | usize::from(odd);
            same_cuts(&input(kind, len, seed), p)?;
        }

        /// Any masks, bit 63 included (the crate's even-byte test, `mask << 1`, drops it), any
        /// even sizes with avg ≤ max: one cut of the crate's `v2020::cut` against ours.
        #[test]
        fn one_cut_matches_the_crate_for_any_masks(
            bits_s in prop::collection::vec(0u32..64, 0..24),
            bits_l in prop::collection::vec(0u32..64, 0..20),
            top in any::<bool>(),
            min in 1usize..3000,
            avg in 1usize..6000,
            max_extra in 0usize..20_000,
            kind in 0u8..5,
            seed in any::<u64>(),
            len in 0usize..40_000,
        ) {
            let mask = |bits: &[u32]| bits.iter().fold(0u64, |m, b| m | 1 << b);
            let mask_s = mask(&bits_s) | u64::from(top) << 63;
            let mask_l = mask(&bits_l);
            let (min, avg) = (2 * min, 2 * avg);
            let max = avg + 2 * max_extra;
            let data = input(kind, len, seed);
            let (_, theirs) = v2020::cut(&data, min, avg, max, mask_s, mask_l, mask_s << 1, mask_l << 1);
            let ours = Cutter::with_masks(min, avg, max, mask_s, mask_l).cut(&data);
            prop_assert_eq!(ours, theirs, "masks {:#x} {:#x} sizes {}/{}/{}", mask_s, mask_l, min, avg, max);
        }
    }

    /// A hit at every offset relative to the lane blocks and their warm-ups: the same input cut
    /// from each of 4096 start offsets, under masks that hit about every 2^12 and 2^10 bytes (so
    /// lanes of 256 and 64 pairs, often more than one lane hitting), bit 63 set or not.
    #[test]
    fn cuts_match_the_crate_from_every_offset() {
        let data = pseudo_random(80_000, 11);
        for (mask_s, mask_l) in [
            (0x0000_d900_0353_1000, 0x0000_5900_0353_0000u64),
            (0x8000_d900_0353_0000, 0x8000_1900_0353_0000),
        ] {
            let ours = Cutter::with_masks(128, 4096, 65536, mask_s, mask_l);
            for start in 0..4096 {
                let src = &data[start..];
                let (_, theirs) = v2020::cut(
                    src,
                    128,
                    4096,
                    65536,
                    mask_s,
                    mask_l,
                    mask_s << 1,
                    mask_l << 1,
                );
                assert_eq!(ours.cut(src), theirs, "start {start} masks {mask_s:#x}");
            }
        }
    }

    /// Lengths at and around `min`, `avg` and `max`, odd and even, for each kind of input.
    #[test]
    fn cuts_match_the_crate_at_the_size_edges() {
        for p in [TINY, SMALL, DEFAULT] {
            let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
            let mut lens = vec![0, 1, 2, 3, 2 * max + 1, 3 * max - 1];
            for edge in [min, avg, max] {
                lens.extend(edge - 3..=edge + 3);
            }
            for kind in 0..5 {
                let data = input(kind, 3 * max + 7, 99 + u64::from(kind));
                for &len in &lens {
                    let d = &data[..len];
                    assert_eq!(
                        lengths(d, p),
                        crate_lengths(d, p),
                        "kind {kind} len {len} {p:?}"
                    );
                }
            }
        }
    }

    /// The production sizes over inputs with many cuts, including hits inside lane warm-ups.
    #[test]
    fn default_sizes_cut_like_the_crate() {
        let p = DEFAULT;
        for kind in 0..5 {
            let data = input(kind, 20 << 20, 7 + u64::from(kind));
            same_cuts(&data, p).unwrap();
        }
    }
}

/// The cut search alone, crate against [`Cutter`], no hashing: `cargo test --release -p cairn-cdc
/// bench -- --ignored --nocapture` (256 MiB pseudo-random; best of 5 each).
#[cfg(test)]
mod bench {
    use std::time::{Duration, Instant};

    use super::tests_support::{ChunkParams, pseudo_random};
    use super::*;

    fn best_of_5(mut f: impl FnMut() -> usize) -> (Duration, usize) {
        let mut best = Duration::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = std::hint::black_box(f());
            best = best.min(t.elapsed());
        }
        (best, n)
    }

    #[test]
    #[ignore = "a timing, not a test: run it with --release"]
    fn cut_search_alone() {
        let data = pseudo_random(256 << 20, 1);
        for p in [
            super::tests_support::DEFAULT,
            ChunkParams {
                min: 2048,
                avg: 8192,
                max: 32768,
            },
        ] {
            let (theirs, n) = best_of_5(|| {
                fastcdc::v2020::FastCDC::with_level(
                    &data,
                    p.min as usize,
                    p.avg as usize,
                    p.max as usize,
                    NORMALIZATION,
                )
                .count()
            });
            let cutter = Cutter::new(p.min, p.avg, p.max);
            let (ours, m) = best_of_5(|| {
                let (mut rest, mut chunks) = (&data[..], 0);
                while !rest.is_empty() {
                    rest = &rest[cutter.cut(rest)..];
                    chunks += 1;
                }
                chunks
            });
            assert_eq!(n, m);
            let gbps = |d: Duration| data.len() as f64 / d.as_secs_f64() / 1e9;
            println!(
                "{p:?}: {n} chunks; crate {:.1} ms ({:.2} GB/s), lanes {:.1} ms ({:.2} GB/s): {:.2}x",
                theirs.as_secs_f64() * 1e3,
                gbps(theirs),
                ours.as_secs_f64() * 1e3,
                gbps(ours),
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
    }
}
