//! Processing-time histograms with logarithmic buckets: each bucket's upper bound is 5% above the
//! one before, from 1 µs up to past the longest time a valid event can give (timestamps are below
//! 1e11 s), so a percentile read from one is within one bucket (5%) of the truth at every
//! magnitude (or within 1 µs of it below 1 µs).
//!
//! [`Histogram`] is dense (one count per bucket) for answering a query; [`Rollup`] keeps the same
//! information sparsely, per hour of start time, inside the projection.

/// Ratio between consecutive bucket bounds.
pub const RATIO: f64 = 1.05;
const FIRST_S: f64 = 1e-6;
/// Number of buckets: 1e-6 s × 1.05^803 ≈ 1.03 × 10^11 s, above `TIMESTAMP_SECONDS_MAX`.
pub const BUCKETS: usize = 804;
const _: () = assert!(crate::event::TIMESTAMP_SECONDS_MAX <= 1.03e11);

/// The bucket of a processing time in seconds (negative times, from skewed client clocks, count as
/// zero).
pub fn bucket(seconds: f64) -> u16 {
    if seconds <= FIRST_S {
        return 0;
    }
    let index = ((seconds / FIRST_S).ln() / RATIO.ln()).ceil() as usize;
    index.min(BUCKETS - 1) as u16
}

/// Upper bound of a bucket in seconds.
pub fn upper(index: usize) -> f64 {
    FIRST_S * RATIO.powi(index as i32)
}

/// A dense histogram with exact count, sum, min and max.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    /// Observations.
    pub total: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Smallest observation.
    pub min: f64,
    /// Largest observation.
    pub max: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Histogram {
    /// Adds one observation.
    pub fn add(&mut self, seconds: f64) {
        self.counts[bucket(seconds.max(0.0)) as usize] += 1;
        self.total += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
    }

    /// Adds everything a roll-up holds.
    pub fn merge(&mut self, rollup: &Rollup) {
        for &(index, count) in &rollup.buckets {
            self.counts[index as usize] += u64::from(count);
        }
        self.total += rollup.timed;
        self.sum += rollup.sum;
        self.min = self.min.min(rollup.min);
        self.max = self.max.max(rollup.max);
    }

    /// The `p` quantile (0 < p ≤ 1), as the upper bound of its bucket clamped to [min, max].
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper(index).min(self.max).max(self.min));
            }
        }
        Some(self.max)
    }

    /// Mean, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum / self.total as f64)
    }
}

/// Finished interactions that started in one hour: outcome counts and, for completed and failed
/// ones, their processing times as a sparse histogram.
#[derive(Debug, Clone, Default)]
pub struct Rollup {
    /// Completed interactions.
    pub completed: u64,
    /// Failed interactions.
    pub failed: u64,
    /// Cancelled interactions (no processing time counted).
    pub cancelled: u64,
    /// Completed and failed interactions with a processing time.
    pub timed: u64,
    /// Sum of their processing times.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// `(bucket, count)`, sorted by bucket, non-zero counts only.
    buckets: Vec<(u16, u32)>,
}

impl Rollup {
    /// Adds a processing time.
    pub fn add_time(&mut self, seconds: f64) {
        if self.timed == 0 {
            self.min = seconds;
            self.max = seconds;
        }
        self.timed += 1;
        self.sum += seconds;
        self.min = self.min.min(seconds);
        self.max = self.max.max(seconds);
        let index = bucket(seconds.max(0.0));
        match self.buckets.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.buckets[at].1 += 1,
            Err(at) => self.buckets.insert(at, (index, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_one_bucket() {
        let mut h = Histogram::default();
        let mut r = Rollup::default();
        for i in 1..=1000 {
            h.add(i as f64 * 0.01);
            r.add_time(i as f64 * 0.01);
        }
        let mut merged = Histogram::default();
        merged.merge(&r);
        for hist in [&h, &merged] {
            for (p, exact) in [(0.5, 5.0), (0.95, 9.5), (0.99, 9.9)] {
                let got = hist.percentile(p).unwrap();
                assert!(
                    got >= exact && got <= exact * RATIO,
                    "p{p}: {got} vs {exact}"
                );
            }
            assert_eq!(hist.total, 1000);
            assert_eq!((hist.min, hist.max), (0.01, 10.0));
        }
    }

    #[test]
    fn percentiles_are_within_one_bucket_at_every_magnitude() {
        // From 2 µs to the longest time two valid timestamps can be apart.
        let mut scale = 2e-6;
        while scale < 1e11 {
            let mut h = Histogram::default();
            for i in 1..=100 {
                h.add(scale * (1.0 + i as f64 / 100.0));
            }
            for (p, exact) in [(0.5, scale * 1.5), (0.99, scale * 1.99), (1.0, scale * 2.0)] {
                let got = h.percentile(p).unwrap();
                assert!(
                    got >= exact * (1.0 - 1e-9) && got <= exact * RATIO,
                    "scale {scale:e}: p{p} {got:e} vs {exact:e}"
                );
            }
            scale *= 7.3;
        }
    }
}
