//! Coverage-guided search finds a planted bug, and reaches new cells as it
//! goes.

use tally::core::Policy;
use tally_sim::explore::Explorer;

use crate::scenario;

#[test]
fn explore_finds_a_worker_that_deletes_its_copy_of_a_lost_lease() {
    let mut x = Explorer::new(scenario("stale-handles"), Policy::AbandonLostLease, 2);
    let found = (0..10).find_map(|_| {
        let tried = x.step();
        (!tried.summary.verdict.passed()).then_some(tried)
    });
    let tried = found.unwrap_or_else(|| panic!("no failure in 10 runs; {} cells reached", x.cells.len()));
    assert!(
        tried.summary.verdict.counts.contains_key("dropped-job"),
        "{:?}",
        tried.summary.verdict.counts
    );
    assert!(x.cells.iter().any(|c| c.starts_with("fault ")), "{:?}", x.cells);
    assert!(x.cells.iter().any(|c| c.starts_with("key ")), "{:?}", x.cells);
    assert!(x.cells.contains("rare stale-handle-used"), "{:?}", x.cells);
    assert!(!x.corpus.is_empty());
}
