//! Needless resubmissions: a key resent although a message of it (its job
//! or its result) had been in the queues since before the pass that first
//! found it missing.
//!
//! Resending a key whose run is on its way is never unsafe (the second run
//! is a counted duplicate), but it costs a run of the experiment, and the
//! driver's rules exist to prevent it: a key is resent only when a second
//! pass, a quiet period after the first, finds it still missing, with the
//! queues drained all along. A message that was already queued at the first
//! pass and is still queued at the decision has been queued for the whole
//! quiet period, longer than the counts lag: a look would have seen it. A
//! message queued after the first pass (a run that outlived its queue's
//! deletion, racing the resubmission) is a race the driver cannot see, and
//! is not flagged. Counts that under-count at random defeat any quiet
//! period, so the world checks this only when its counts are accurate, if
//! late, snapshots.
//!
//! Only messages a sender put in a queue are counted, not the duplicates
//! SQS itself makes (a latent one is invisible to every count), and each
//! key keeps the arrival of its newest message: a check can then miss a
//! needless resend, never invent one.

use tally::core::manifest::Round;

/// Live messages of each key, and the keys resent while an old one lived.
#[derive(Debug, Default)]
pub struct Resends {
    /// Job and result messages of each key in the queues (saturating).
    live: Vec<u8>,
    /// When each key's newest live message arrived, simulated ms.
    newest_ms: Vec<u32>,
    /// When the step that made the driver's first finding of the pending
    /// resend began (or the current step, if none was recorded).
    first_pass_ms: Option<u64>,
    /// When the driver's current step began.
    step_ms: u64,
    /// Whether needless resends are judged at all.
    judged: bool,
    /// Keys resent although a message of them was queued at the first pass.
    pub needless: Vec<u64>,
}

impl Resends {
    /// Tracking for keys `0..jobs`; `judged` false turns the check off.
    pub fn new(jobs: u64, judged: bool) -> Self {
        Self {
            live: vec![0; jobs as usize],
            newest_ms: vec![0; jobs as usize],
            first_pass_ms: None,
            step_ms: 0,
            judged,
            needless: Vec::new(),
        }
    }

    /// A job or result message of `index` entered its queue at `now_ms`.
    pub fn added(&mut self, index: u64, now_ms: u64) {
        let i = index as usize;
        if let Some(n) = self.live.get_mut(i) {
            *n = n.saturating_add(1);
            self.newest_ms[i] = u32::try_from(now_ms).unwrap_or(u32::MAX);
        }
    }

    /// A job or result message of `index` left its queue.
    pub fn removed(&mut self, index: u64) {
        if let Some(n) = self.live.get_mut(index as usize) {
            *n = n.saturating_sub(1);
        }
    }

    /// The driver begins a step at `now_ms`.
    pub fn step_started(&mut self, now_ms: u64) {
        self.step_ms = now_ms;
    }

    /// The step begun last was a pass that found keys missing without
    /// resending them yet (a first finding).
    pub fn first_pass(&mut self) {
        self.first_pass_ms = Some(self.step_ms);
    }

    /// The driver stored a round record resending `round`'s keys.
    pub fn decided(&mut self, round: &Round) {
        let since = self.first_pass_ms.take().unwrap_or(self.step_ms);
        if !self.judged {
            return;
        }
        for &(first, last) in &round.ranges {
            for index in first..=last.min(self.live.len() as u64 - 1) {
                let i = index as usize;
                if self.live[i] > 0 && u64::from(self.newest_ms[i]) < since {
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
            "the key was resent although its job or result had been queued since before the pass that found it \
             missing"
                .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(first: u64, last: u64) -> Round {
        Round {
            attempt: 2,
            ranges: vec![(first, last)],
        }
    }

    #[test]
    fn a_key_resent_while_a_message_queued_before_the_first_pass_lives_is_needless() {
        let mut r = Resends::new(4, true);
        r.added(1, 0);
        r.added(2, 1_500);
        r.step_started(1_000);
        r.first_pass();
        r.step_started(7_000);
        r.decided(&round(0, 3));
        assert_eq!(r.needless, vec![1], "key 2's message arrived after the first pass");
        r.removed(1);
        r.step_started(20_000);
        r.decided(&round(1, 1));
        assert_eq!(r.needless, vec![1], "key 1's message left the queue");
    }

    #[test]
    fn without_a_recorded_first_pass_the_deciding_step_counts_and_unjudged_runs_flag_nothing() {
        let mut r = Resends::new(2, true);
        r.added(0, 10);
        r.step_started(20);
        r.decided(&round(0, 1));
        assert_eq!(r.needless, vec![0]);
        let mut off = Resends::new(2, false);
        off.added(0, 10);
        off.step_started(20);
        off.decided(&round(0, 1));
        assert!(off.needless.is_empty());
    }
}
