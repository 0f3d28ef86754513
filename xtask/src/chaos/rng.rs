//! A small seeded pseudo-random generator (SplitMix64) for the chaos
//! command: which request to send, when to kill, which byte to damage.
//!
//! Chaos needs no statistical quality, only cheap numbers that a printed seed
//! reproduces (the timing of a kill against the load never repeats exactly,
//! but every choice the command makes does).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator that starts from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A seed from the clock and the process id, for runs without `--seed`.
    pub(crate) fn clock_seed() -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high` (`low` when the range is empty).
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// True once in `n` draws on average.
    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.range(0, n) == 0
    }

    /// An index into a collection of `len` items (`len` > 0).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        self.range(0, len as u64) as usize
    }

    /// A duration in `low..high`, at millisecond resolution.
    pub(crate) fn millis(&mut self, low: Duration, high: Duration) -> Duration {
        Duration::from_millis(self.range(low.as_millis() as u64, high.as_millis() as u64))
    }

    /// An independent generator derived from this one.
    pub(crate) fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}
