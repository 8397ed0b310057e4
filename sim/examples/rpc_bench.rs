//! Throughput of the simulated cloud, in wall-clock terms.
//!
//! `cargo run --release -p tally-sim --example rpc_bench -- [MODE] [SECONDS]`
//!
//! - `queue` (default): 10 client tasks on one host loop send 10 / receive
//!   10 / delete 10 through `SimQueue` for SECONDS of simulated time (10 ms
//!   tick); prints RPCs per wall second.
//! - `udp` / `tcp`: the bare transports: 10 tasks echo 1 KiB frames, UDP with
//!   a fresh socket per call (what `net` does) or TCP over one kept
//!   connection per task.
//! - `model`: the SQS model alone: send 1,000,000 messages, then receive and
//!   delete them all.
//! - `drain N`: N jobs already queued; 10 worker hosts of 16 tasks each
//!   receive 10 and delete 10 until the queue is empty (the shape of the
//!   6-million-job scenario's job queue).

// A benchmark measures real time; the simulation itself never reads it.
#![allow(clippy::disallowed_methods)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tally::core::Queue;
use tally_sim::hosts::{QueueAttrs, SqsFaults, SqsModel};
use tally_sim::net::{serve_sqs, sim_builder, RpcConfig, SharedSqs, SimQueue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TASKS: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("queue", String::as_str);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(600);
    match mode {
        "queue" => report("SimQueue RPCs", seconds, queue(seconds)),
        "udp" => report("UDP echo RPCs", seconds, udp(seconds)),
        "tcp" => report("TCP echo RPCs", seconds, tcp(seconds)),
        "model" => model(),
        "drain" => drain(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000)),
        other => eprintln!("unknown mode {other:?}: use queue, udp, tcp or model"),
    }
}

fn report(what: &str, seconds: u64, (calls, wall): (u64, Duration)) {
    println!(
        "{what}: {calls} in {seconds} simulated s, {:.2} wall s: {:.0} RPCs per wall second",
        wall.as_secs_f64(),
        calls as f64 / wall.as_secs_f64()
    );
}

/// Run `sim` until every client is done; return the wall time taken.
fn timed(mut sim: turmoil::Sim<'_>) -> Duration {
    let started = Instant::now();
    sim.run().expect("the simulation runs");
    started.elapsed()
}

fn queue(seconds: u64) -> (u64, Duration) {
    let model: SharedSqs = Rc::new(std::cell::RefCell::new(SqsModel::new(1, SqsFaults::default())));
    let mut sim = sim_builder(1)
        .simulation_duration(Duration::from_secs(seconds + 60))
        .build();
    let served = Rc::clone(&model);
    sim.host("sqs", move || serve_sqs(Rc::clone(&served)));
    let calls = Rc::new(Cell::new(0u64));
    let counter = Rc::clone(&calls);
    sim.client("client", async move {
        let queue = Rc::new(SimQueue::new(RpcConfig::new("sqs"), "jobs", QueueAttrs::default()));
        queue.ensure().await?;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (queue, calls) = (Rc::clone(&queue), Rc::clone(&counter));
                tokio::task::spawn_local(async move {
                    let deadline = Duration::from_secs(seconds);
                    let bodies: Vec<String> = (0..10)
                        .map(|i| format!("{{\"sweep\":\"s\",\"index\":{task}{i}}}"))
                        .collect();
                    while turmoil::elapsed() < deadline {
                        let _ = queue.send_batch(&bodies).await;
                        let got = queue.receive(10, 30_000, 1_000).await.unwrap_or_default();
                        let handles: Vec<String> = got.into_iter().map(|r| r.handle).collect();
                        if !handles.is_empty() {
                            let _ = queue.delete_batch(&handles).await;
                        }
                        calls.set(calls.get() + 3);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        Ok(())
    });
    let wall = timed(sim);
    (calls.get(), wall)
}

fn echo_sim(seconds: u64) -> turmoil::Sim<'static> {
    sim_builder(1)
        .simulation_duration(Duration::from_secs(seconds + 60))
        .build()
}

fn udp(seconds: u64) -> (u64, Duration) {
    let mut sim = echo_sim(seconds);
    sim.host("echo", || async {
        let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", 7)).await?;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await?;
            socket.send_to(&buf[..len], from).await?;
        }
    });
    let calls = Rc::new(Cell::new(0u64));
    let counter = Rc::clone(&calls);
    sim.client("client", async move {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let calls = Rc::clone(&counter);
                tokio::task::spawn_local(async move {
                    let (frame, mut buf) = (vec![7u8; 1024], vec![0u8; 64 * 1024]);
                    while turmoil::elapsed() < Duration::from_secs(seconds) {
                        let socket = turmoil::net::UdpSocket::bind(("0.0.0.0", 0)).await.expect("bind");
                        socket.send_to(&frame, ("echo", 7)).await.expect("send");
                        socket.recv_from(&mut buf).await.expect("recv");
                        calls.set(calls.get() + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        Ok(())
    });
    let wall = timed(sim);
    (calls.get(), wall)
}

fn tcp(seconds: u64) -> (u64, Duration) {
    let mut sim = echo_sim(seconds);
    sim.host("echo", || async {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 7)).await?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let mut buf = vec![0u8; 1024];
                while stream.read_exact(&mut buf).await.is_ok() {
                    if stream.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let calls = Rc::new(Cell::new(0u64));
    let counter = Rc::clone(&calls);
    sim.client("client", async move {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let calls = Rc::clone(&counter);
                tokio::task::spawn_local(async move {
                    let mut stream = turmoil::net::TcpStream::connect(("echo", 7)).await.expect("connect");
                    let mut buf = vec![7u8; 1024];
                    while turmoil::elapsed() < Duration::from_secs(seconds) {
                        stream.write_all(&buf).await.expect("write");
                        stream.read_exact(&mut buf).await.expect("read");
                        calls.set(calls.get() + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        Ok(())
    });
    let wall = timed(sim);
    (calls.get(), wall)
}

fn model() {
    const N: u32 = 1_000_000;
    let mut m = SqsModel::new(1, SqsFaults::default());
    m.ensure("jobs", &QueueAttrs::default(), 0).expect("ensure");
    let started = Instant::now();
    for start in (0..N).step_by(10) {
        let bodies: Vec<String> = (start..start + 10).map(|i| format!("{{\"index\":{i}}}")).collect();
        m.send_batch("jobs", &bodies, 0).expect("send");
    }
    let sent = started.elapsed();
    let (mut now_ms, mut received) = (0, 0);
    while received < N {
        let got = m.receive("jobs", 10, 30_000, now_ms).expect("receive");
        received += got.len() as u32;
        let handles: Vec<String> = got.into_iter().map(|r| r.handle).collect();
        m.delete_batch("jobs", &handles, now_ms).expect("delete");
        now_ms += 1;
    }
    let total = started.elapsed();
    println!(
        "SqsModel: sent {N} in {:.2} s ({:.0} msg/s); received and deleted them in {:.2} s ({:.0} msg/s)",
        sent.as_secs_f64(),
        f64::from(N) / sent.as_secs_f64(),
        (total - sent).as_secs_f64(),
        f64::from(N) / (total - sent).as_secs_f64()
    );
}

fn drain(jobs: u64) {
    let mut m = SqsModel::new(1, SqsFaults::default());
    m.ensure("jobs", &QueueAttrs::default(), 0).expect("ensure");
    for start in (0..jobs).step_by(10) {
        let bodies: Vec<String> = (start..(start + 10).min(jobs))
            .map(|i| format!("{{\"index\":{i}}}"))
            .collect();
        m.send_batch("jobs", &bodies, 0).expect("send");
    }
    let model: SharedSqs = Rc::new(std::cell::RefCell::new(m));
    let capacity: usize = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(1 << 16);
    let mut sim = sim_builder(1)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .udp_capacity(capacity)
        .build();
    let served = Rc::clone(&model);
    sim.host("sqs", move || serve_sqs(Rc::clone(&served)));
    let calls = Rc::new(Cell::new(0u64));
    for host in 0..10 {
        let counter = Rc::clone(&calls);
        sim.client(format!("worker{host}"), async move {
            let queue = Rc::new(SimQueue::new(RpcConfig::new("sqs"), "jobs", QueueAttrs::default()));
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (queue, calls) = (Rc::clone(&queue), Rc::clone(&counter));
                    tokio::task::spawn_local(async move {
                        loop {
                            let got = queue.receive(10, 30_000, 1_000).await.unwrap_or_default();
                            calls.set(calls.get() + 1);
                            if got.is_empty() {
                                return;
                            }
                            let handles: Vec<String> = got.into_iter().map(|r| r.handle).collect();
                            let _ = queue.delete_batch(&handles).await;
                            calls.set(calls.get() + 1);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    sim.run().expect("the simulation runs");
    let wall = started.elapsed();
    println!(
        "drained {jobs} jobs with 160 pollers in {:.0} simulated s, {:.2} wall s ({} RPCs, {:.0} RPCs per wall second; {} left)",
        sim.elapsed().as_secs_f64(),
        wall.as_secs_f64(),
        calls.get(),
        calls.get() as f64 / wall.as_secs_f64(),
        model.borrow().bodies("jobs").len()
    );
}
