//! Applying faults to the running simulation, and healing them.

use std::cell::RefCell;
use std::rc::Rc;

use crate::faults::schedule::Fault;
use crate::faults::tripwire::SharedWires;
use crate::hosts::{S3Faults, S3Model, SqsFaults, SqsModel};

/// Apply one scheduled fault to the running simulation.
pub fn apply(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    now: u64,
    sqs: &Rc<RefCell<SqsModel>>,
    wires: &SharedWires,
    restarts: &mut Vec<(u64, String)>,
    repairs: &mut Vec<(u64, String, String, bool)>,
) {
    match fault {
        Fault::Crash { host, down_ms } => {
            if sim.is_host_running(host.as_str()) {
                sim.crash(host.as_str());
                restarts.push((now + down_ms, host.clone()));
            }
        }
        Fault::Partition { a, b, ms, oneway } => {
            if *oneway {
                sim.partition_oneway(a.as_str(), b.as_str());
            } else {
                sim.partition(a.as_str(), b.as_str());
            }
            repairs.push((now + ms, a.clone(), b.clone(), *oneway));
        }
        Fault::CrashAt { host, step, down_ms } => {
            wires.lock().expect("wires lock").arm(host, *step, *down_ms);
        }
        Fault::DeleteQueue { queue } => {
            let _ = sqs.borrow_mut().delete_queue(queue, now);
        }
        Fault::Purge { queue } => {
            // A purge within a minute of another is refused, as on SQS.
            let _ = sqs.borrow_mut().purge(queue, now);
        }
    }
}

/// The end of the fault phase: rates to zero, partitions repaired,
/// crashed hosts restarted.
pub fn heal(
    sim: &mut turmoil::Sim<'_>,
    sqs: &Rc<RefCell<SqsModel>>,
    s3: &Rc<RefCell<S3Model>>,
    restarts: &mut Vec<(u64, String)>,
    repairs: &mut Vec<(u64, String, String, bool)>,
) {
    sim.set_fail_rate(0.0);
    sqs.borrow_mut().set_faults(SqsFaults::default());
    s3.borrow_mut().set_faults(S3Faults::default());
    for (_, a, b, oneway) in repairs.drain(..) {
        if oneway {
            sim.repair_oneway(a.as_str(), b.as_str());
        } else {
            sim.repair(a.as_str(), b.as_str());
        }
    }
    for (_, host) in restarts.drain(..) {
        sim.bounce(host.as_str());
    }
}
