//! Simulated time for the protocol code: [`SimClock`] implements
//! [`tally::core::Clock`] on turmoil's virtual time.
//!
//! Monotonic time is the simulation's elapsed time, shared by every host and
//! unaffected by a host's restart. Wall time is the simulation's fixed epoch
//! ([`epoch`]) plus elapsed time plus this clock's skew, so a run's records
//! are the same on every machine and a clock-skew fault is one call.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tally::core::seams::BoxFuture;
use tally::core::Clock;

/// Wall-clock milliseconds at the start of every simulation:
/// 2026-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// The start of every simulation, for `turmoil::Builder::epoch`.
pub fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(EPOCH_MS)
}

/// A host's clock. Clones share their skew, so a fault injector can keep a
/// clone and change the skew while the host runs.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock without skew.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose wall time is off by `skew_ms` (positive: ahead).
    pub fn with_skew_ms(skew_ms: i64) -> Self {
        let clock = Self::default();
        clock.set_skew_ms(skew_ms);
        clock
    }

    /// Set how far wall time is off (positive: ahead). Monotonic time is
    /// never skewed.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// How far wall time is off.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// The time of the step being run, when a driver keeps it (see
    /// [`StepTime`]).
    static STEP_MS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Keeps the simulated time of the current step for [`sim_now_ms`], while
/// it lives. Reading turmoil's clock means finding the current host in the
/// world's tables, and the protocol reads the time several times per job; a
/// driver that steps the simulation itself knows the time already.
pub struct StepTime(());

impl StepTime {
    /// Start keeping step times on this thread.
    pub fn install() -> Self {
        STEP_MS.set(Some(0));
        Self(())
    }

    /// The step about to run starts at `ms`.
    pub fn set(&self, ms: u64) {
        STEP_MS.set(Some(ms));
    }
}

impl Drop for StepTime {
    fn drop(&mut self) {
        STEP_MS.set(None);
    }
}

/// Simulated milliseconds since the simulation started, at the step being
/// run: every host sees the same value during one step.
///
/// # Panics
/// Outside a turmoil host, unless a [`StepTime`] is installed.
pub fn sim_now_ms() -> u64 {
    STEP_MS.get().unwrap_or_else(|| {
        let elapsed = turmoil::sim_elapsed().expect("simulated time is read inside a turmoil host");
        elapsed.as_millis() as u64
    })
}

/// [`sim_now_ms`], or `None` outside a simulation (a unit test feeding
/// an oracle by hand).
pub fn try_sim_now_ms() -> Option<u64> {
    STEP_MS
        .get()
        .or_else(|| turmoil::sim_elapsed().map(|e| e.as_millis() as u64))
}

impl Clock for SimClock {
    fn mono_ms(&self) -> u64 {
        sim_now_ms()
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS
            .saturating_add(sim_now_ms())
            .saturating_add_signed(self.skew_ms())
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_starts_at_the_epoch_moves_with_sleeps_and_follows_the_skew() {
        let mut sim = turmoil::Builder::new().epoch(epoch()).rng_seed(1).build();
        sim.client("host", async {
            let clock = SimClock::new();
            let wall0 = clock.wall_ms();
            assert!((EPOCH_MS..EPOCH_MS + 10).contains(&wall0), "{wall0}");
            let mono0 = clock.mono_ms();
            clock.sleep(1_500).await;
            assert!(clock.mono_ms() - mono0 >= 1_500);
            let skewed = clock.clone();
            skewed.set_skew_ms(-60_000);
            assert!(clock.wall_ms() + 59_000 < wall0 + 60_000 + 1_500);
            assert_eq!(clock.skew_ms(), -60_000);
            Ok(())
        });
        sim.run().unwrap();
    }
}
