//! Draws ranks `0..n` with probability proportional to `1 / (rank + 1)^s`
//! (Zipf), so a few seeded links take most redirects, as real traffic does.
//! The cumulative distribution is built once; a draw is one binary search.

use rand::Rng;

/// A Zipf distribution over `0..n`.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    /// `cdf[k]` = P(rank <= k); the last entry is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// Zipf over `0..n` with exponent `s`; `n` must be at least 1.
    pub(crate) fn new(n: usize, s: f64) -> Self {
        assert!(n >= 1, "a distribution needs at least one rank");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    /// One rank.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        // First rank whose cumulative probability exceeds u; rounding can leave
        // the last entry a hair under 1, hence the clamp.
        self.cdf.partition_point(|p| *p <= u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn frequencies_follow_the_power_law() {
        let (n, s, draws) = (100, 1.0, 200_000);
        let zipf = Zipf::new(n, s);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0_u32; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for rank in [0, 1, 9] {
            let want = f64::from(draws) / ((rank + 1) as f64 * harmonic);
            let got = f64::from(counts[rank]);
            assert!((got - want).abs() < want * 0.05, "rank {rank}: {got} vs {want}");
        }
        assert!(counts.iter().all(|c| *c > 0), "every rank is reachable");
    }
}
