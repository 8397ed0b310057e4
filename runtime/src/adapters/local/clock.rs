//! Real time. The simulator provides its own clock; nothing else in tally
//! reads the system clock.

#![allow(clippy::disallowed_methods)]

use crate::core::seams::BoxFuture;
use crate::core::Clock;

/// The machine's clocks.
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn mono_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn sleep(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both clocks follow real time: the monotonic one from zero at the
    /// clock's making, the wall one from the epoch; and a sleep lasts.
    #[tokio::test]
    async fn the_clocks_follow_real_time_and_a_sleep_lasts() {
        let clock = SystemClock::default();
        // 2020-01-01T00:00:00Z, in milliseconds since the epoch.
        let wall = clock.wall_ms();
        assert!(wall > 1_577_836_800_000, "wall time {wall} ms is before 2020");
        let start = clock.mono_ms();
        assert!(start < 1_000, "monotonic time starts near zero, not at {start} ms");
        clock.sleep(30).await;
        let slept = clock.mono_ms() - start;
        assert!(slept >= 30, "a 30 ms sleep lasted {slept} ms");
    }
}
