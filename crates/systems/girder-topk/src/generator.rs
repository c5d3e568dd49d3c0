//! The built-in view generator: views of `videos` videos whose popularity follows a
//! Zipf law (video rank `r` is drawn with probability ∝ `1/r^s`), at a fixed rate,
//! through the same log as the HTTP batches. Bounded: at most [`RATE_MAX`] views a
//! second over at most [`VIDEOS_MAX`] videos, and one generator per instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};

/// The most views a second a generator makes.
pub const RATE_MAX: u32 = 20_000;
/// The most distinct videos a generator draws from.
pub const VIDEOS_MAX: u32 = 100_000;
/// The largest Zipf exponent.
pub const SKEW_MAX: f64 = 3.0;
/// How often the generator appends a batch.
const TICK: Duration = Duration::from_millis(100);

/// What a generator makes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorSpec {
    /// Views a second, `1..=RATE_MAX`.
    pub rate_per_sec: u32,
    /// Distinct videos, `1..=VIDEOS_MAX`.
    pub videos: u32,
    /// The Zipf exponent `s`, `0..=SKEW_MAX` (0 is uniform).
    pub skew: f64,
}

impl GeneratorSpec {
    /// Checks the bounds.
    ///
    /// # Errors
    /// What is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=RATE_MAX).contains(&self.rate_per_sec) {
            return Err(format!("rate_per_sec must be 1 to {RATE_MAX}, got {}", self.rate_per_sec));
        }
        if !(1..=VIDEOS_MAX).contains(&self.videos) {
            return Err(format!("videos must be 1 to {VIDEOS_MAX}, got {}", self.videos));
        }
        if !(0.0..=SKEW_MAX).contains(&self.skew) {
            return Err(format!("skew must be 0 to {SKEW_MAX}, got {}", self.skew));
        }
        Ok(())
    }
}

/// The id of the video of rank `rank` (1 is the most popular).
#[must_use]
pub fn video_id(rank: u32) -> String {
    format!("vid-{rank:06}")
}

/// Draws ranks `1..=n` with probability ∝ `1/r^s`, by binary search in the
/// cumulative weights (`n` floats, built once).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The law over `n ≥ 1` ranks with exponent `s`.
    #[must_use]
    pub fn new(n: u32, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|r| {
                total += 1.0 / f64::from(r).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= u);
        (i.min(self.cumulative.len() - 1) + 1) as u32
    }
}

/// Where a generator's views go: `append` takes a batch of video ids stamped now.
pub trait ViewSink: Send + Sync + 'static {
    /// Appends `videos`, each one view now.
    fn append(
        &self,
        videos: Vec<String>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// A running generator.
#[derive(Debug)]
pub struct Running {
    /// What it makes.
    pub spec: GeneratorSpec,
    /// Views appended so far.
    pub generated: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts a generator writing to `sink`.
    pub fn start(spec: GeneratorSpec, sink: Arc<impl ViewSink>) -> Self {
        let generated = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let counter = Arc::clone(&generated);
        let task = tokio::spawn(async move {
            let zipf = Zipf::new(spec.videos, spec.skew);
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // Tenths of a view carried between ticks, so any rate comes out exact.
            let mut owed = 0u64;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                owed += u64::from(spec.rate_per_sec);
                let n = owed / 10;
                owed %= 10;
                let batch: Vec<String> = (0..n).map(|_| video_id(zipf.sample(&mut rng))).collect();
                match sink.append(batch).await {
                    Ok(()) => {
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "the view generator's append failed"),
                }
            }
        });
        Self { spec, generated, stop, task }
    }

    /// Stops it and waits for its last append.
    pub async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.generated.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_frequencies_follow_the_law() {
        let zipf = Zipf::new(100, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 101];
        let draws = 200_000;
        for _ in 0..draws {
            let r = zipf.sample(&mut rng);
            assert!((1..=100).contains(&r));
            counts[r as usize] += 1;
        }
        let h100: f64 = (1..=100).map(|r| 1.0 / f64::from(r)).sum();
        for r in [1u32, 2, 10] {
            let expected = f64::from(draws) / (f64::from(r) * h100);
            let got = f64::from(counts[r as usize]);
            assert!((got - expected).abs() < expected * 0.05, "rank {r}: {got} vs {expected}");
        }
        // Uniform when s = 0.
        let flat = Zipf::new(4, 0.0);
        let mut c = [0u32; 5];
        for _ in 0..40_000 {
            c[flat.sample(&mut rng) as usize] += 1;
        }
        assert!(c[1..].iter().all(|&n| (9_000..11_000).contains(&n)), "{c:?}");
    }

    #[test]
    fn specs_are_bounded() {
        let ok = GeneratorSpec { rate_per_sec: 100, videos: 1_000, skew: 1.1 };
        assert!(ok.validate().is_ok());
        for bad in [
            GeneratorSpec { rate_per_sec: 0, ..ok },
            GeneratorSpec { rate_per_sec: RATE_MAX + 1, ..ok },
            GeneratorSpec { videos: 0, ..ok },
            GeneratorSpec { videos: VIDEOS_MAX + 1, ..ok },
            GeneratorSpec { skew: -0.1, ..ok },
            GeneratorSpec { skew: f64::NAN, ..ok },
            GeneratorSpec { skew: 3.5, ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
