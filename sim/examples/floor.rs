//! The bare-turmoil floor: the least a simulation of tally's shape can cost.
//!
//! `cargo run --release -p tally-sim --example floor -- [--jobs N] [--seed S]`
//!
//! One queue host holds jobs 0..N. Ten worker hosts of sixteen poller tasks
//! each fetch batches of ten and acknowledge them, every call one UDP
//! datagram out and one back on a fresh socket with a timeout (as
//! `net::rpc` does), 10 ms tick, turmoil's default latency. Nothing else:
//! no model, no results, no oracle. tally's six-million run divided by this
//! program's wall time at the same size is what `bench/sim.py --floor`
//! reports. It prints one line and exits non-zero unless every job was
//! acknowledged exactly once.

// Only main reads real time, to report its own wall time; the simulation
// inside never does.
#![allow(clippy::disallowed_methods)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use turmoil::net::UdpSocket;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKER_HOSTS: usize = 10;
const POLLERS: usize = 16;
const BATCH: usize = 10;
const PORT: u16 = 9000;
const TIMEOUT: Duration = Duration::from_secs(1);
const FETCH: u8 = 0;
const ACK: u8 = 1;

/// What the queue host knows, kept outside its future so main can check it.
#[derive(Default)]
struct Ledger {
    pending: VecDeque<u64>,
    /// Acknowledgements per job: every entry must end at exactly 1.
    acks: Vec<u8>,
    /// Calls whose reply did not come in time (the run then fails).
    timeouts: u64,
    /// A hash of every acknowledgement and its simulated time: equal
    /// between two runs of one seed when the run is deterministic.
    trace: u64,
}

fn main() -> ExitCode {
    let (jobs, seed) = match parse_args() {
        Ok(got) => got,
        Err(msg) => {
            eprintln!("floor: {msg}");
            return ExitCode::from(2);
        }
    };
    let ledger = Rc::new(RefCell::new(Ledger {
        pending: (0..jobs).collect(),
        acks: vec![0; usize::try_from(jobs).expect("job count fits in memory")],
        timeouts: 0,
        trace: 0,
    }));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(Duration::from_secs(365 * 24 * 3600))
        .udp_capacity(1 << 16)
        .build();
    let served = Rc::clone(&ledger);
    sim.host("queue", move || serve(Rc::clone(&served)));
    for w in 0..WORKER_HOSTS {
        let ledger = Rc::clone(&ledger);
        sim.client(format!("worker{w}"), async move {
            let pollers: Vec<_> = (0..POLLERS)
                .map(|_| tokio::task::spawn_local(poll(Rc::clone(&ledger))))
                .collect();
            for p in pollers {
                p.await??;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let outcome = sim.run();
    let wall = started.elapsed().as_secs_f64();
    let sim_s = sim.elapsed().as_secs_f64();
    let ledger = ledger.borrow();
    let once = ledger.acks.iter().filter(|&&a| a == 1).count();
    let ok = outcome.is_ok() && ledger.timeouts == 0 && once == ledger.acks.len();
    println!(
        "{} floor: {jobs} jobs, {sim_s:.0} sim s, {wall:.2} wall s ({once} acknowledged once, {} timeouts, trace {:016x})",
        if ok { "PASS" } else { "FAIL" },
        ledger.timeouts,
        ledger.trace
    );
    if let Err(e) = outcome {
        eprintln!("floor: the simulation stopped: {e}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<(u64, u64), String> {
    let (mut jobs, mut seed) = (6_000_000u64, 1u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let target = match flag.as_str() {
            "--jobs" => &mut jobs,
            "--seed" => &mut seed,
            other => return Err(format!("unknown argument {other:?}: use --jobs N and --seed S")),
        };
        let value = args.next().ok_or_else(|| format!("{flag} needs a number"))?;
        *target = value
            .parse()
            .map_err(|_| format!("{flag} needs a number, not {value:?}"))?;
    }
    if jobs == 0 {
        return Err("--jobs must be at least 1".into());
    }
    Ok((jobs, seed))
}

/// The queue host: answer each datagram at once. A fetch takes up to
/// [`BATCH`] jobs off the front; an acknowledgement counts each job named.
async fn serve(ledger: Rc<RefCell<Ledger>>) -> turmoil::Result {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(16 + 8 * BATCH);
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        let req = &buf[..len];
        out.clear();
        out.extend_from_slice(&req[..8]);
        let mut ledger = ledger.borrow_mut();
        match req[8] {
            FETCH => {
                let n = ledger.pending.len().min(BATCH);
                for job in ledger.pending.drain(..n) {
                    out.extend_from_slice(&job.to_le_bytes());
                }
            }
            _ => {
                for job in req[9..].chunks_exact(8).map(read_u64) {
                    let slot = &mut ledger.acks[usize::try_from(job).expect("job ids index the ledger")];
                    *slot = slot.saturating_add(1);
                    let at = u64::try_from(turmoil::elapsed().as_millis()).unwrap_or(u64::MAX);
                    ledger.trace = mix(mix(ledger.trace, job), at);
                }
            }
        }
        drop(ledger);
        // A reply that cannot be sent is lost: the caller times out.
        let _ = socket.try_send_to(&out, from);
    }
}

/// One poller: fetch a batch, acknowledge it, until the queue is empty.
async fn poll(ledger: Rc<RefCell<Ledger>>) -> turmoil::Result {
    let mut next_id = 0u64;
    let mut req = Vec::with_capacity(16 + 8 * BATCH);
    loop {
        next_id += 1;
        req.clear();
        req.extend_from_slice(&next_id.to_le_bytes());
        req.push(FETCH);
        let Some(reply) = call(&req, &ledger).await else {
            return Ok(());
        };
        if reply.len() == 8 {
            return Ok(());
        }
        next_id += 1;
        req.clear();
        req.extend_from_slice(&next_id.to_le_bytes());
        req.push(ACK);
        req.extend_from_slice(&reply[8..]);
        if call(&req, &ledger).await.is_none() {
            return Ok(());
        }
    }
}

/// One call on a fresh socket: the request out, its reply back (matched by
/// the id in its first 8 bytes), or `None` after [`TIMEOUT`].
async fn call(req: &[u8], ledger: &RefCell<Ledger>) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    let to = SocketAddr::from((turmoil::lookup("queue"), PORT));
    socket.send_to(req, to).await.ok()?;
    let mut buf = vec![0u8; 16 + 8 * BATCH];
    let wait = async {
        loop {
            let (len, _) = socket.recv_from(&mut buf).await.ok()?;
            if len >= 8 && buf[..8] == req[..8] {
                return Some(buf[..len].to_vec());
            }
        }
    };
    match tokio::time::timeout(TIMEOUT, wait).await {
        Ok(reply) => reply,
        Err(_) => {
            ledger.borrow_mut().timeouts += 1;
            None
        }
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("chunks of 8"))
}

/// One step of a 64-bit multiplicative hash (not for security; only to
/// compare two runs).
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
}
