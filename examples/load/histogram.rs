//! A log-linear latency histogram: 128 buckets per power of two (under 1% error), small enough
//! to send from a client process as one JSON line however many deliveries it counted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bits of value kept below the top bit.
const PRECISION: u32 = 7;
const HALF: u64 = 1 << PRECISION;

/// Counts of nanosecond values, plus the exact maximum.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    max: u64,
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        *self.buckets.entry(bucket_of(value)).or_default() += 1;
        self.count += 1;
        self.max = self.max.max(value);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, count) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += count;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), to bucket precision; the exact maximum for 1.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((self.count as f64 - 1.0) * q).round() as u64;
        let mut seen = 0;
        for (bucket, count) in &self.buckets {
            seen += count;
            if seen > rank {
                return value_of(*bucket).min(self.max);
            }
        }
        self.max
    }
}

/// Values below 256 get their own bucket; above, each power of two splits into 128.
fn bucket_of(value: u64) -> u32 {
    let bits = 64 - value.leading_zeros();
    let shift = bits.saturating_sub(PRECISION + 1);
    let mantissa = value >> shift;
    (u64::from(shift) * HALF + mantissa) as u32
}

/// The middle of a bucket.
fn value_of(bucket: u32) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < 2 * HALF {
        return bucket;
    }
    let shift = bucket / HALF - 1;
    let mantissa = bucket - shift * HALF;
    (mantissa << shift) + (1 << shift) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_within_one_percent() {
        for value in [0, 1, 255, 256, 257, 1_000, 123_456, 9_876_543_210] {
            let back = value_of(bucket_of(value));
            assert!(
                back.abs_diff(value) as f64 <= value as f64 / 100.0 + 1.0,
                "{value} -> {back}"
            );
        }
    }
}
