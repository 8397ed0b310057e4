//! Keys per second through the reconciler and the checker, against the
//! physical floor: a plain SQLite insert and scan of the same rows, in the
//! same process, on the same machine, interleaved.
//!
//! `cargo run --release -p tally-sim --example reconcile_bench -- [KEYS] [REPEATS]`
//!
//! The input is what a simulated run leaves behind: KEYS result bodies as
//! the worker writes them, in compressed segments of 5,000 in the bucket
//! model, with a manifest. Measured, each as the median of REPEATS:
//! - `reconcile`: read every segment, classify every key (no sink);
//! - `reconcile + check`: the same with the checker's recorder as the sink,
//!   then the checker against an oracle that saw every result accepted;
//! - `sqlite insert`: the same rows (key, run id, status, payload hash and
//!   the body, taken apart beforehand) into an in-memory table with one
//!   prepared statement in one transaction;
//! - `sqlite scan`: read them back, summing the keys.

// A benchmark measures real time; the simulation itself never reads it.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use tally::core::manifest::{manifest_key, Manifest};
use tally::core::reconciler::{reconcile, NoSink};
use tally::core::{segment, Outcome, ResultMessage, ResultStatus, ResultView};
use tally_sim::checker::oracle::Oracle;
use tally_sim::checker::{check, Recorder};
use tally_sim::doubles::memstore::{MemStore, StillClock};
use tally_sim::hosts::{S3Faults, S3Model};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let sweep = tally_sim::world::synthetic_sweep("bench".into(), keys, 0);
    let id = sweep.id();
    let bodies: Vec<String> = (0..keys).map(|i| body(&id, i)).collect();
    let (store, oracle) = fixtures(sweep, &bodies);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let (_tx, never) = tokio::sync::watch::channel(false);
    let policy = tally::core::Policy::Real;

    // The floor's rows are taken apart beforehand: only SQLite is timed.
    let rows: Vec<Row<'_>> = bodies
        .iter()
        .map(|b| {
            let v = ResultView::decode(b).expect("bodies decode");
            let payload = v.payload_hash() as i64;
            (v.index as i64, v.run_id.into_owned(), v.status.as_str(), payload, b)
        })
        .collect();
    let mut times: [Vec<f64>; 4] = Default::default();
    for _ in 0..repeats {
        let t = Instant::now();
        let report = rt
            .block_on(reconcile(&store, &StillClock, &never, policy, &id, &mut NoSink))
            .expect("reconciles");
        assert_eq!(report.done, keys);
        times[0].push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut recorder = Recorder::new(&id, keys);
        let report = rt
            .block_on(reconcile(&store, &StillClock, &never, policy, &id, &mut recorder))
            .expect("reconciles");
        let verdict = check(&oracle, &recorder, &report, true);
        assert!(verdict.passed(), "the checker found {:?}", verdict.counts);
        times[1].push(t.elapsed().as_secs_f64());

        let (insert, scan) = sqlite(&rows);
        times[2].push(insert);
        times[3].push(scan);
    }
    println!("{keys} keys, {repeats} repeats, medians\n");
    println!("| what | keys / s | vs sqlite insert | vs sqlite scan |");
    println!("|---|---|---|---|");
    let rate = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        keys as f64 / v[v.len() / 2]
    };
    let rates: Vec<f64> = times.iter_mut().map(rate).collect();
    let names = ["reconcile", "reconcile + check", "sqlite insert", "sqlite scan"];
    for (name, r) in names.iter().zip(&rates) {
        println!("| {name} | {r:.0} | {:.2}x | {:.2}x |", r / rates[2], r / rates[3]);
    }
}

/// A result body as a worker of the simulation writes it.
fn body(sweep: &str, index: u64) -> String {
    let mut metrics = serde_json::Map::new();
    metrics.insert("score".into(), serde_json::json!((index as f64 * 0.618).fract()));
    ResultMessage {
        tally: tally::core::message::FORMAT_VERSION,
        sweep: sweep.into(),
        index,
        attempt: 1,
        receive_count: 1,
        run_id: format!("worker-{}.1.{}-{}", index % 5, index % 32, index / 160),
        worker: format!("worker-{}.1", index % 5),
        started_ms: 1_767_225_600_000 + index,
        duration_ms: 10,
        outcome: Outcome {
            status: ResultStatus::Ok,
            exit_code: Some(0),
            metrics: Some(metrics),
            stdout: None,
            stderr_tail: String::new(),
        },
    }
    .encode()
}

/// Key, run id, status, payload hash, body.
type Row<'a> = (i64, String, &'static str, i64, &'a String);

/// Insert the rows in one transaction, then scan them: (insert s, scan s).
fn sqlite(rows: &[Row<'_>]) -> (f64, f64) {
    let conn = rusqlite::Connection::open_in_memory().expect("an in-memory database");
    conn.execute_batch(
        "CREATE TABLE results(idx INTEGER PRIMARY KEY, run_id TEXT, status TEXT, payload INTEGER, body TEXT)",
    )
    .expect("a table");
    let t = Instant::now();
    conn.execute_batch("BEGIN").expect("a transaction");
    {
        let mut insert = conn
            .prepare("INSERT INTO results VALUES (?1, ?2, ?3, ?4, ?5)")
            .expect("a statement");
        for (index, run_id, status, payload, body) in rows {
            insert
                .execute(rusqlite::params![index, run_id, status, payload, body])
                .expect("an insert");
        }
    }
    conn.execute_batch("COMMIT").expect("a commit");
    let insert = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut scan = conn
        .prepare("SELECT idx, run_id, status, payload, body FROM results")
        .expect("a statement");
    let mut rows = scan.query([]).expect("a query");
    let mut sum = 0i64;
    while let Some(row) = rows.next().expect("a row") {
        sum = sum.wrapping_add(row.get::<_, i64>(0).expect("a key"));
        let _: rusqlite::types::ValueRef<'_> = row.get_ref(4).expect("a body");
    }
    std::hint::black_box(sum);
    (insert, t.elapsed().as_secs_f64())
}

/// The bucket (manifest and segments of `bodies`) and an oracle that saw
/// every body produced and accepted.
fn fixtures(sweep: tally::sweep::Sweep, bodies: &[String]) -> (MemStore, Oracle) {
    let id = sweep.id();
    let keys = bodies.len() as u64;
    let mut model = S3Model::new(1, S3Faults::default());
    let manifest = Manifest {
        id: id.clone(),
        submitted: keys,
        sweep,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
    model
        .put_if_absent(&manifest_key(&id), &manifest_bytes)
        .expect("no faults");
    for chunk in bodies.chunks(5_000) {
        let (key, bytes) = segment::encode("bench", chunk);
        model.put_if_absent(&key, &bytes).expect("no faults");
    }
    let store = MemStore::snapshot(&model);
    let mut oracle = Oracle::new(&id, keys, "jobs", "results");
    for b in bodies {
        let view = ResultView::decode(b).expect("bodies decode");
        oracle.started(view.index);
        oracle.produced(view.index, view.payload_hash());
        oracle.accepted("results", b);
    }
    (store, oracle)
}
