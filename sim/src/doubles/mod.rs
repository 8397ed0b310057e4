//! Simulated stand-ins for the seams the cloud models do not cover: the
//! clock on simulated time, the experiment that reports every run to the
//! oracle, and a frozen copy of the bucket for the final reconcile.

pub mod clock;
pub mod experiment;
pub mod memstore;
