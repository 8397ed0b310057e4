//! Protocol policies. [`Policy::Real`] is tally's protocol; the others are
//! deliberately broken variants ("mutants") that the simulator's checker
//! must catch, proving it can fail.

use serde::{Deserialize, Serialize};

/// Which version of the protocol the roles follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// tally's protocol.
    #[default]
    Real,
    /// The original flawed system: the worker deletes its job before the
    /// result is delivered, and the aggregator deletes results before its
    /// segment is stored.
    Naive,
    /// A queue call that finds its queue gone fails instead of recreating it.
    NoRecreate,
    /// The aggregator drops a second result for a key it has seen, so
    /// duplicates and conflicts vanish from the report.
    SilentDedupe,
    /// The reconciler has no receipts ledger: it takes the set of submitted
    /// jobs to be the set of keys it saw results for.
    NoLedger,
    /// The finish-and-resubmit driver takes an empty work queue for a
    /// drained sweep: it reconciles, resends and declares completion while
    /// jobs are still running and results are still on their way.
    EagerFinish,
    /// The driver takes one drained look for a drained sweep: it waits out
    /// no quiet period (it still confirms missing keys with a second pass),
    /// so counts that lag make it resend keys whose results are on their way.
    NoQuiet,
    /// The driver takes its first complete pass for the final word: it
    /// never reads the store again, so a late duplicate or conflict that
    /// lands afterwards is never reported.
    CompleteOnce,
    /// The driver resends missing keys only after it saw a queue deleted:
    /// it believes nothing else loses a job, which message expiry (and the
    /// dead-letter queue) disprove.
    DeletionOnly,
    /// The driver resends a key at most once: it trusts an acknowledged
    /// resend to reach a worker, which a queue in the middle of its
    /// deletion (acknowledging sends, then losing them) disproves.
    ResendOnce,
    /// A worker whose heartbeat finds its receipt handle stale (someone
    /// else received the job since) abandons the run and deletes its copy,
    /// trusting a stale-handle delete to touch nothing, which AWS does not
    /// promise: it may delete the copy the other worker is running.
    AbandonLostLease,
    /// The reconciler takes runs whose payloads differ for agreeing
    /// duplicates: it classes the key done and counts the extra runs as
    /// duplicates, so a conflict vanishes from the report.
    BlindConflicts,
    /// The worker runs a job whatever its receive count: a job that kills
    /// its worker is never recorded as given up.
    NoGiveUp,
    /// The SQS adapter reads a batch entry that failed as sent, deleted or
    /// changed.
    EntryFailureOk,
    /// The S3 adapter drops the second page of every listing.
    SkipPage,
    /// The AWS adapter takes a throttling error for a permanent one.
    ThrottlePermanent,
    /// The S3 adapter takes a 412 on a create-only write for an error
    /// rather than for "the key is taken", so a segment whose first write
    /// landed unacknowledged is never taken for stored.
    ErrorOn412,
}

impl Policy {
    /// Every policy, real first.
    pub const ALL: [Policy; 17] = [
        Self::Real,
        Self::Naive,
        Self::NoRecreate,
        Self::SilentDedupe,
        Self::NoLedger,
        Self::EagerFinish,
        Self::NoQuiet,
        Self::CompleteOnce,
        Self::DeletionOnly,
        Self::ResendOnce,
        Self::AbandonLostLease,
        Self::BlindConflicts,
        Self::NoGiveUp,
        Self::EntryFailureOk,
        Self::SkipPage,
        Self::ThrottlePermanent,
        Self::ErrorOn412,
    ];

    /// The worker deletes each job message as soon as it receives it.
    pub fn worker_deletes_first(self) -> bool {
        self == Self::Naive
    }

    /// The aggregator deletes result messages before storing their segment.
    pub fn aggregator_deletes_first(self) -> bool {
        self == Self::Naive
    }

    /// A missing queue is recreated with its attributes.
    pub fn recreates_missing_queue(self) -> bool {
        self != Self::NoRecreate
    }

    /// The aggregator keeps every record, duplicates included.
    pub fn keeps_duplicates(self) -> bool {
        self != Self::SilentDedupe
    }

    /// The reconciler reads the receipts ledger.
    pub fn reads_ledger(self) -> bool {
        self != Self::NoLedger
    }

    /// The driver trusts an empty work queue alone, without a quiet period
    /// or a confirming pass.
    pub fn finishes_on_empty_work_queue(self) -> bool {
        self == Self::EagerFinish
    }

    /// The driver waits out a quiet period of drained looks before a pass
    /// counts.
    pub fn waits_out_quiet_period(self) -> bool {
        !matches!(self, Self::EagerFinish | Self::NoQuiet)
    }

    /// The driver keeps reading the store after a complete pass.
    pub fn rereads_after_complete(self) -> bool {
        self != Self::CompleteOnce
    }

    /// The driver resends only after it saw a queue missing.
    pub fn resends_only_after_deletion(self) -> bool {
        self == Self::DeletionOnly
    }

    /// The driver may resend a key again after an earlier round.
    pub fn resends_a_key_again(self) -> bool {
        self != Self::ResendOnce
    }

    /// A worker abandons a run whose lease it lost, deleting its copy.
    pub fn abandons_lost_lease(self) -> bool {
        self == Self::AbandonLostLease
    }

    /// The reconciler tells runs that disagree from runs that agree.
    pub fn detects_conflicts(self) -> bool {
        self != Self::BlindConflicts
    }

    /// The worker records a job received more than `max_attempts` times as
    /// given up instead of running it again.
    pub fn gives_up(self) -> bool {
        self != Self::NoGiveUp
    }

    /// The SQS adapter reports each failed batch entry as failed.
    pub fn reads_entry_failures(self) -> bool {
        self != Self::EntryFailureOk
    }

    /// The S3 adapter keeps every page of a listing.
    pub fn reads_every_page(self) -> bool {
        self != Self::SkipPage
    }

    /// The AWS adapter retries throttling errors.
    pub fn retries_throttling(self) -> bool {
        self != Self::ThrottlePermanent
    }

    /// The S3 adapter takes a 412 on a create-only write for "taken".
    pub fn takes_412_for_taken(self) -> bool {
        self != Self::ErrorOn412
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Naive => "naive",
            Self::NoRecreate => "no-recreate",
            Self::SilentDedupe => "silent-dedupe",
            Self::NoLedger => "no-ledger",
            Self::EagerFinish => "eager-finish",
            Self::NoQuiet => "no-quiet",
            Self::CompleteOnce => "complete-once",
            Self::DeletionOnly => "deletion-only",
            Self::ResendOnce => "resend-once",
            Self::AbandonLostLease => "abandon-lost-lease",
            Self::BlindConflicts => "blind-conflicts",
            Self::NoGiveUp => "no-give-up",
            Self::EntryFailureOk => "entry-failure-ok",
            Self::SkipPage => "skip-page",
            Self::ThrottlePermanent => "throttle-permanent",
            Self::ErrorOn412 => "error-on-412",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parsing a policy name (the command lines' `--policy`): the core does
/// not depend on the command-line library, so this is plain `FromStr`.
impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
            format!("unknown policy {s:?}; one of: {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_parses_from_its_own_name_and_nothing_else_does() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert!("realistic".parse::<Policy>().is_err());
    }
}
