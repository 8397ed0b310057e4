//! Integration tests of the AWS backend against a local moto server.
//!
//! Start one with `scripts/moto.sh start` and export its endpoint as
//! `TALLY_TEST_MOTO` (e.g. `http://127.0.0.1:PORT`). Without it the tests
//! print that they were skipped and pass, except under CI (`CI` set) or
//! scripts/test.sh (`TALLY_TEST_REQUIRE_MOTO` set), where a missing server
//! is a failure.
// A test reads as one story from set-up to check; the length limit is for
// production code.
#![allow(clippy::too_many_lines)]

mod cli;
mod conformance;
mod pipeline;
mod store;
mod support;
