//! What goes wrong and when: scenarios, the schedule of one run drawn from
//! a scenario and a seed, crashes aimed at protocol steps, and applying
//! faults to the running simulation.

pub mod inject;
pub mod scenario;
pub mod schedule;
pub mod strike;
pub mod tripwire;
