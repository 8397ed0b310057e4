//! The `tally` binary on the embedded backend, driven as a user would.
// A test reads as one story from set-up to check; the length limit is for
// production code.
#![allow(clippy::too_many_lines)]

mod bad_input;
mod crash;
mod damage;
mod diagnostics;
mod jobs;
mod reconcile;
mod stop;
mod support;
