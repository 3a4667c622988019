//! The simulator's seeded RNG (splitmix64): the same seed gives the same run.

use rand_core::{impls, CryptoRng, Error, RngCore};

/// Deterministic and not secret: for simulations and tests only. It claims `CryptoRng` so the
/// cores (which demand one) can run on it; never give it to a real session.
#[derive(Debug, Clone)]
pub struct DangerSeededRng(u64);

impl DangerSeededRng {
    /// An RNG that replays `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A child RNG for one actor, so actors draw independently of each other's order.
    pub fn fork(&mut self) -> Self {
        Self(self.next_u64())
    }
}

impl RngCore for DangerSeededRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        impls::fill_bytes_via_next(self, dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for DangerSeededRng {}
