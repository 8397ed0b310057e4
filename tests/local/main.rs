//! Integration tests of the `tally` binary on the embedded backend.

mod cli;
