//! The simulated cloud: pure models of SQS and S3 with the worst-case
//! semantics AWS documents. They do no I/O and take the simulated time as an
//! argument; [`crate::net`] serves them over turmoil's network.

pub mod s3;
pub mod sqs;

pub use s3::{ListPage, S3Faults, S3Model, S3Observer, S3WorstCase, LIST_PAGE_MAX};
pub use sqs::{QueueAttrs, SqsFaults, SqsModel, SqsObserver, SqsWorstCase};
