//! Placeholder: cross-crate protocol tests.
