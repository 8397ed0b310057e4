//! Needless resubmissions: a key resent although a result of it had sat in
//! the results queue for a whole quiet period.
//!
//! Resending a key whose result is on its way is never unsafe (the second
//! run is a counted duplicate), but it costs a run of the experiment, and
//! the driver's quiet period exists to prevent it: while the results queue
//! holds a result, it is not drained, so no pass counts. That holds as long
//! as the queue's counts lag less than the quiet period; counts that
//! under-count at random defeat any quiet period, so the world checks this
//! only when its counts are accurate, if late, snapshots. A result accepted
//! within the quiet period before the decision (a run that outlived its
//! queue's deletion, racing the resubmission) is a race the driver cannot
//! see, and is not flagged. Only the copies the results queue accepted from
//! a sender are counted, not the duplicates SQS itself makes (a latent one
//! is invisible to every count): a duplicate's removal may then hide a
//! queued original, so the check can miss a needless resend, never invent
//! one.

use tally::core::manifest::Round;

/// Live copies of each key's result messages, and the keys resent while
/// one had been live for a quiet period.
#[derive(Debug, Default)]
pub struct Resends {
    /// Result copies of each key in the results queue (saturating).
    live: Vec<u8>,
    /// When each key's oldest live copy arrived, simulated ms.
    since_ms: Vec<u32>,
    /// How long a result must have been queued for a resend to be needless.
    quiet_ms: u64,
    /// Keys resent although a result had been queued for `quiet_ms`.
    pub needless: Vec<u64>,
}

impl Resends {
    /// Tracking for keys `0..jobs`, against a driver that waits `quiet_ms`.
    pub fn new(jobs: u64, quiet_ms: u64) -> Self {
        Self {
            live: vec![0; jobs as usize],
            since_ms: vec![0; jobs as usize],
            quiet_ms,
            needless: Vec::new(),
        }
    }

    /// A copy of a result of `index` entered the results queue.
    pub fn result_added(&mut self, index: u64, now_ms: u64) {
        let i = index as usize;
        if let Some(n) = self.live.get_mut(i) {
            if *n == 0 {
                self.since_ms[i] = u32::try_from(now_ms).unwrap_or(u32::MAX);
            }
            *n = n.saturating_add(1);
        }
    }

    /// A copy of a result of `index` left the results queue.
    pub fn result_removed(&mut self, index: u64) {
        if let Some(n) = self.live.get_mut(index as usize) {
            *n = n.saturating_sub(1);
        }
    }

    /// The driver stored a round record resending `round`'s keys at `now_ms`.
    pub fn decided(&mut self, round: &Round, now_ms: u64) {
        for &(first, last) in &round.ranges {
            for index in first..=last.min(self.live.len() as u64 - 1) {
                let i = index as usize;
                let queued_ms = now_ms.saturating_sub(u64::from(self.since_ms[i]));
                if self.live[i] > 0 && queued_ms >= self.quiet_ms {
                    self.needless.push(index);
                }
            }
        }
    }
}

/// Flag every needless resubmission in `verdict`.
pub fn check_resends(resends: &Resends, verdict: &mut crate::checker::Verdict) {
    for &index in &resends.needless {
        verdict.flag(
            "needless-resubmission",
            Some(index),
            format!(
                "the key was resent although a result of it had been in the results queue for {} ms",
                resends.quiet_ms
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_resent_after_its_result_sat_queued_a_quiet_period_is_needless() {
        let mut r = Resends::new(4, 1_000);
        let round = |first, last| Round {
            attempt: 2,
            ranges: vec![(first, last)],
        };
        r.result_added(1, 0);
        r.result_added(2, 500);
        r.decided(&round(0, 3), 1_200);
        assert_eq!(r.needless, vec![1], "key 2's result arrived within the quiet period");
        r.result_removed(1);
        r.decided(&round(1, 1), 5_000);
        assert_eq!(r.needless, vec![1], "key 1's result left the queue");
    }
}
