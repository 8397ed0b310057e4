//! The settle check: the report a user was given last must still be true
//! of the bucket at the end.
//!
//! A sweep is declared complete while duplicates may still be on their way
//! (a run holding a stale handle, a copy SQS delivers again much later):
//! the roles keep running through a settle phase after completion, and
//! whatever lands then must be named by a later report. The checker
//! compares the reconciler's last report with a fresh reconciliation of
//! the final bucket; any difference is a change nobody reported.

use tally::core::reconciler::Report;

use crate::checker::Verdict;

/// Flag `unreported-change` when `last` (the last report the reconciler
/// gave, `None` if it never completed) differs from `fresh`, a
/// reconciliation of the final bucket.
pub fn check_settled(last: Option<&Report>, fresh: &Report, verdict: &mut Verdict) {
    let Some(last) = last else { return };
    if last == fresh {
        return;
    }
    let (a, b) = (
        serde_json::to_value(last).unwrap_or_default(),
        serde_json::to_value(fresh).unwrap_or_default(),
    );
    let changed: Vec<String> = match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} {} -> {v}", a.get(k).cloned().unwrap_or_default()))
            .collect(),
        _ => vec!["the reports".into()],
    };
    verdict.flag(
        "unreported-change",
        None,
        format!("after the last report: {}", changed.join(", ")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_last_report_is_flagged_and_none_is_not() {
        let last = Report {
            submitted: 3,
            done: 3,
            ..Report::default()
        };
        let mut v = Verdict::default();
        check_settled(Some(&last), &last.clone(), &mut v);
        check_settled(None, &last, &mut v);
        assert!(v.passed());
        let fresh = Report {
            duplicates: 1,
            duplicate_runs: 1,
            ..last.clone()
        };
        check_settled(Some(&last), &fresh, &mut v);
        assert_eq!(v.counts.get("unreported-change"), Some(&1));
        assert!(
            v.violations[0].detail.contains("duplicates 0 -> 1"),
            "{:?}",
            v.violations
        );
    }
}
