//! The role hosts: each runs tally's own protocol code (submitter, workers,
//! aggregator, reconciler) over the simulated cloud. A role that fails is
//! restarted after a pause, as a service manager would.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;

use tally::core::aggregator::{Aggregator, AggregatorConfig, AggregatorStats};
use tally::core::driver::{self, Driver, DriverConfig};
use tally::core::manifest::ManifestCache;
use tally::core::reconciler::{NoSink, Report};
use tally::core::retry::{CallError, Calls};
use tally::core::submitter::{MemSendLog, SubmitStats, Submitter};
use tally::core::worker::{Worker, WorkerConfig, WorkerStats};
use tally::core::{BlobStore, Clock, Experiment, Policy, Queue};
use tally::sweep::Sweep;

use crate::checker::oracle::SharedOracle;
use crate::doubles::clock::SimClock;
use crate::doubles::experiment::{Messy, SimExperiment};
use crate::faults::scenario::{Scenario, Transport};
use crate::faults::schedule::{hosts, JOBS_QUEUE, RESULTS_QUEUE};
use crate::faults::tripwire::{Aim, SharedWires, Target, TripQueue, TripStore};
use crate::hosts::QueueAttrs;
use crate::net::{sdk_clients, RpcConfig, SimHttpClient, SimQueue, SimStore};

/// How often the reconciler host looks at the queues.
const RECONCILE_POLL_MS: u64 = 1_000;
/// How long the queues must look drained before a pass counts, when their
/// counts are exact; a scenario whose counts lag adds the lag.
pub const RECONCILE_QUIET_MS: u64 = 5_000;

/// The reconciler's quiet period in `scenario`: production sets it above
/// the time SQS's counts take to catch up (90 s by default), and so does
/// the simulation, above the model's count lag.
pub fn quiet_ms(scenario: &Scenario) -> u64 {
    RECONCILE_QUIET_MS + scenario.worst.count_lag_ms
}

/// What every role host shares; lives outside the host futures.
pub struct Ctx {
    /// The scenario.
    pub scenario: Scenario,
    /// Which protocol the roles follow.
    pub policy: Policy,
    /// The run's seed.
    pub seed: u64,
    /// Largest clock skew.
    pub skew_ms: u64,
    /// Fraction of jobs that outlive their visibility timeout.
    pub slow_job_rate: f64,
    /// Ground truth.
    pub oracle: SharedOracle,
    /// The submitter's progress, on its durable disk.
    pub submit_log: Arc<MemSendLog>,
    /// The reconciler's resubmission progress, on its durable disk.
    pub resubmit_log: Arc<MemSendLog>,
    /// Starts per host, so every incarnation has its own id.
    pub incarnations: RefCell<BTreeMap<String, u32>>,
    /// When the reconciler first found every job final after the faults.
    pub done_at_ms: Cell<Option<u64>>,
    /// The reconciler's last complete report of each sweep, and when it
    /// gave it.
    pub last_reports: RefCell<BTreeMap<String, (u64, Report)>>,
    /// Crashes aimed at protocol steps.
    pub wires: SharedWires,
    /// Nondeterministic and poison keys (each worker host adds its name
    /// and the wires).
    pub messy: Messy,
    /// Every sweep of the run, `sweep` first; all are submitted at once
    /// and driven through the same queues and bucket.
    pub sweeps: Vec<Sweep>,
    /// Roles that stopped on an error (when, which host, the error): in
    /// production the process would exit, so the checker flags each.
    pub role_failures: RefCell<Vec<(u64, String, String)>>,
}

/// The work, results and dead-letter queues and the bucket, as one host
/// reaches them.
type Reach = (Arc<dyn Queue>, Arc<dyn Queue>, Arc<dyn Queue>, Arc<dyn BlobStore>);

impl Ctx {
    fn incarnation(&self, host: &str) -> u32 {
        let mut map = self.incarnations.borrow_mut();
        let n = map.entry(host.to_owned()).or_default();
        *n += 1;
        *n
    }

    /// The queues (work, results, dead-letter) and the bucket as `host`
    /// reaches them: every call passes the tripwires aimed at `host`.
    fn aimed(&self, host: &str) -> Reach {
        let aim = Aim {
            host: host.to_owned(),
            wires: self.wires.clone(),
        };
        let (jobs, results, dead, store) = reach(&self.scenario, self.policy);
        let trip = |inner: Arc<dyn Queue>, target| -> Arc<dyn Queue> {
            Arc::new(TripQueue {
                inner,
                target,
                aim: aim.clone(),
            })
        };
        (
            trip(jobs, Target::Jobs),
            trip(results, Target::Results),
            dead,
            Arc::new(TripStore {
                inner: store,
                aim: aim.clone(),
            }),
        )
    }

    /// A host's clock, skewed by an amount drawn from the seed and host.
    fn clock(&self, host: &str) -> Arc<SimClock> {
        if self.skew_ms == 0 {
            return Arc::new(SimClock::new());
        }
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(host.as_bytes(), self.seed);
        let skew = (h % (2 * self.skew_ms + 1)) as i64 - self.skew_ms as i64;
        Arc::new(SimClock::with_skew_ms(skew))
    }
}

/// Run `role` until it succeeds, pausing a second after each failure, as
/// a service manager would. Each failure is recorded: a role stops only
/// on an error tally's retry layer takes for permanent, and a production
/// process would exit on it.
async fn supervise<F, Fut>(ctx: &Ctx, host: &str, clock: &dyn Clock, mut role: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), CallError>>,
{
    while let Err(e) = role().await {
        tracing::debug!(error = %e, "role failed; restarting it");
        let now = crate::doubles::clock::sim_now_ms();
        ctx.role_failures
            .borrow_mut()
            .push((now, host.to_owned(), e.to_string()));
        clock.sleep(1_000).await;
    }
}

/// Add every role host to `sim`.
pub fn add_hosts(sim: &mut turmoil::Sim<'_>, ctx: &Rc<Ctx>) {
    let c = ctx.clone();
    sim.host(hosts::SUBMITTER, move || submitter(c.clone()));
    for k in 0..ctx.scenario.workers {
        let c = ctx.clone();
        sim.host(hosts::worker(k), move || worker(c.clone(), k));
    }
    let c = ctx.clone();
    sim.host(hosts::AGGREGATOR, move || aggregator(c.clone()));
    let c = ctx.clone();
    sim.host(hosts::RECONCILER, move || reconciler(c.clone()));
}

async fn submitter(ctx: Rc<Ctx>) -> turmoil::Result {
    let clock = ctx.clock(hosts::SUBMITTER);
    let (jobs, results, dead, store) = ctx.aimed(hosts::SUBMITTER);
    let submitter = Submitter {
        jobs: jobs.clone(),
        store,
        clock: clock.clone(),
        log: ctx.submit_log.clone(),
        policy: ctx.policy,
        stats: Arc::new(SubmitStats::default()),
        window: None,
    };
    let stop = tally::core::never();
    supervise(&ctx, hosts::SUBMITTER, &*clock, || async {
        for q in [&dead, &jobs, &results] {
            let calls = Calls {
                queue: &**q,
                clock: &*clock,
                policy: ctx.policy,
                shutdown: &stop,
            };
            calls.call(|| q.ensure()).await?;
        }
        let submits = ctx.sweeps.iter().map(|sweep| submitter.submit(sweep, &stop));
        futures::future::try_join_all(submits).await.map(|_| ())
    })
    .await;
    std::future::pending::<()>().await;
    Ok(())
}

async fn worker(ctx: Rc<Ctx>, k: u32) -> turmoil::Result {
    let host = hosts::worker(k);
    let id = format!("{host}.{}", ctx.incarnation(&host));
    let clock = ctx.clock(&host);
    let (jobs, results, _, store) = ctx.aimed(&host);
    let experiment: Arc<dyn Experiment> = Arc::new(SimExperiment {
        clock: clock.clone(),
        oracle: ctx.oracle.clone(),
        job_ms: ctx.scenario.job_ms,
        slow_ms: ctx.scenario.visibility_ms * 5 / 2,
        slow_rate: ctx.slow_job_rate,
        seed: ctx.seed,
        messy: Messy {
            host: host.clone(),
            wires: ctx.wires.clone(),
            ..ctx.messy.clone()
        },
    });
    let manifests = Arc::new(ManifestCache::new(Arc::new(move |_: &Sweep| experiment.clone())));
    let w = Arc::new(Worker {
        jobs,
        results,
        store,
        clock: clock.clone(),
        manifests,
        config: WorkerConfig {
            visibility_ms: ctx.scenario.visibility_ms,
            wait_ms: 5_000,
            result_flush_ms: 500,
            policy: ctx.policy,
            ..WorkerConfig::new(id)
        },
        stats: Arc::new(WorkerStats::default()),
    });
    let mut set = tokio::task::JoinSet::new();
    for slot in 0..ctx.scenario.slots as usize {
        let (w, clock, ctx, host) = (w.clone(), clock.clone(), ctx.clone(), host.clone());
        set.spawn_local(async move {
            let stop = tally::core::never();
            supervise(&ctx, &host, &*clock, || w.run(slot, stop.clone())).await;
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

async fn aggregator(ctx: Rc<Ctx>) -> turmoil::Result {
    let id = format!("aggregator.{}", ctx.incarnation(hosts::AGGREGATOR));
    let clock = ctx.clock(hosts::AGGREGATOR);
    let (_, results, _, store) = ctx.aimed(hosts::AGGREGATOR);
    let a = Aggregator {
        results,
        store,
        clock: clock.clone(),
        config: AggregatorConfig {
            visibility_ms: ctx.scenario.visibility_ms * 2,
            wait_ms: 5_000,
            segment_records_max: 5_000,
            segment_age_max_ms: 2_000,
            receivers: 32,
            policy: ctx.policy,
            ..AggregatorConfig::new(id)
        },
        stats: Arc::new(AggregatorStats::default()),
    };
    supervise(&ctx, hosts::AGGREGATOR, &*clock, || a.run(tally::core::never())).await;
    Ok(())
}

/// The finish-and-resubmit driver that `tally run` and `tally reconcile
/// --watch` run, stepping every few seconds for the whole run: it reconciles
/// once the queues have been quiet, resubmits what two passes found
/// missing, and after the fault phase declares the run done when a pass
/// finds nothing missing. It goes on after that, as an operator's later
/// `tally reconcile` would: each complete pass is the report of record,
/// and the world's settle phase checks that the last one stays true. A
/// crash restarts it with nothing in memory but its resubmission log, as a
/// restarted process would.
async fn reconciler(ctx: Rc<Ctx>) -> turmoil::Result {
    let clock = ctx.clock(hosts::RECONCILER);
    let (jobs, results, _, store) = ctx.aimed(hosts::RECONCILER);
    let resubmitter = Submitter {
        jobs: jobs.clone(),
        store: store.clone(),
        clock: clock.clone(),
        log: ctx.resubmit_log.clone(),
        policy: ctx.policy,
        stats: Arc::new(SubmitStats::default()),
        window: None,
    };
    let config = DriverConfig {
        quiet_ms: quiet_ms(&ctx.scenario),
        poll_ms: RECONCILE_POLL_MS,
        rounds_max: u32::MAX,
        progress_ms: None,
        policy: ctx.policy,
    };
    let ids: Vec<String> = ctx.sweeps.iter().map(Sweep::id).collect();
    let mut finishers: Vec<Driver<'_>> = ids
        .iter()
        .map(|id| Driver::new(&*jobs, &*results, &*store, &*clock, &resubmitter, config.clone(), id))
        .collect();
    let stop = tally::core::never();
    loop {
        // One step of each sweep's driver per poll: with one sweep, the
        // steps and sleeps of a driver run to completion.
        let mut all_complete = true;
        for (k, finisher) in finishers.iter_mut().enumerate() {
            // The oracle learns when each step began and which found keys
            // missing first, to judge the resends (checker::resends).
            let began = crate::doubles::clock::sim_now_ms();
            ctx.oracle.lock().expect("oracle lock").sweeps[k]
                .resends
                .step_started(began);
            let step = finisher.run(&stop, &mut NoSink, |_| ControlFlow::Break(())).await;
            if let Ok(Some(driver::Step::Reconciled(_))) = step {
                ctx.oracle.lock().expect("oracle lock").sweeps[k].resends.first_pass();
            }
            if let Ok(Some(driver::Step::Complete(report))) = step {
                // Stamped with the step's start, not its end: the report
                // describes the bucket as listed during the step, and the
                // settle rule needs a report whose listing began after the
                // queues emptied.
                let id = finisher.sweep_id().to_owned();
                ctx.last_reports.borrow_mut().insert(id, (began, report));
            } else {
                all_complete = false;
            }
        }
        let now = crate::doubles::clock::sim_now_ms();
        if all_complete && now >= ctx.scenario.fault_ms && ctx.done_at_ms.get().is_none() {
            ctx.done_at_ms.set(Some(now));
        }
        clock.sleep(RECONCILE_POLL_MS).await;
    }
}

/// The simulated queues (work, results, dead-letter) and the bucket, as a
/// role host reaches them: created with the scenario's retention, as
/// `ensure` creates them in production (14 days there; seconds in a
/// scenario that makes messages expire mid-sweep). With the SDK transport
/// they are production's adapter, `SqsQueue` and `S3Store` (with the
/// bucket as its claim-check store), through the AWS SDK.
fn reach(scenario: &Scenario, policy: Policy) -> Reach {
    match scenario.transport {
        Transport::Direct => {
            let (jobs, results, dead) = sim_queues(scenario);
            (jobs, results, dead, Arc::new(SimStore::new(RpcConfig::new(hosts::S3))))
        }
        Transport::Sdk => sdk_reach(scenario, policy),
    }
}

fn sim_queues(scenario: &Scenario) -> (Arc<dyn Queue>, Arc<dyn Queue>, Arc<dyn Queue>) {
    let visibility_ms = scenario.visibility_ms;
    let retention_ms = scenario.retention_ms.unwrap_or(QueueAttrs::default().retention_ms);
    let jobs_attrs = QueueAttrs {
        visibility_ms,
        max_receives: Some(max_receives(scenario)),
        dead_letter: Some(format!("{JOBS_QUEUE}-dead")),
        retention_ms,
    };
    let results_attrs = QueueAttrs {
        visibility_ms: visibility_ms * 2,
        retention_ms,
        ..QueueAttrs::default()
    };
    let dead_attrs = QueueAttrs {
        retention_ms,
        ..QueueAttrs::default()
    };
    let rpc = RpcConfig::new(hosts::SQS);
    (
        Arc::new(SimQueue::new(rpc.clone(), JOBS_QUEUE, jobs_attrs)),
        Arc::new(SimQueue::new(rpc.clone(), RESULTS_QUEUE, results_attrs)),
        Arc::new(SimQueue::new(rpc, &format!("{JOBS_QUEUE}-dead"), dead_attrs)),
    )
}

fn max_receives(scenario: &Scenario) -> u32 {
    scenario.max_receives.unwrap_or(100)
}

/// The bucket's name in the simulated cloud (the model has one bucket).
const BUCKET: &str = "tally";

fn sdk_reach(scenario: &Scenario, policy: Policy) -> Reach {
    use tally::adapters::aws::{DeadLetter, S3Store, SqsQueue, SqsQueueConfig};
    let http = SimHttpClient::new(RpcConfig::new(hosts::SQS), RpcConfig::new(hosts::S3));
    let (sqs, s3) = sdk_clients(&http, hosts::SQS, hosts::S3);
    let store: Arc<dyn BlobStore> = Arc::new(S3Store::new(s3, BUCKET, "").with_policy(policy));
    let visibility_s = scenario.visibility_ms / 1000;
    let retention_s = scenario
        .retention_ms
        .map_or(tally::adapters::aws::queue::RETENTION_S, |ms| ms / 1000);
    let config = |visibility_s: u64, dead_letter: Option<DeadLetter>| SqsQueueConfig {
        visibility_s,
        retention_s,
        dead_letter,
        ..SqsQueueConfig::default()
    };
    let dead_name = format!("{JOBS_QUEUE}-dead");
    let jobs = config(
        visibility_s,
        Some(DeadLetter {
            queue: dead_name.clone(),
            max_receives: max_receives(scenario),
        }),
    );
    let queue = |name: &str, config| -> Arc<dyn Queue> {
        Arc::new(SqsQueue::new(sqs.clone(), name, config, Some(Arc::clone(&store))).with_policy(policy))
    };
    (
        queue(JOBS_QUEUE, jobs),
        queue(RESULTS_QUEUE, config(2 * visibility_s, None)),
        queue(&dead_name, config(visibility_s, None)),
        Arc::clone(&store),
    )
}
