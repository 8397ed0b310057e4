//! The `tally` binary on the embedded backend, driven as a user would.

mod bad_input;
mod crash;
mod diagnostics;
mod jobs;
mod stop;
mod support;
