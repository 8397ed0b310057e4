//! The final results database: one SQLite file, one row per submitted job,
//! with each parameter and each metric as its own column, so datasette,
//! DuckDB and pandas read it directly. Built by reconciliation into a
//! temporary file and renamed into place, so a crash mid-way leaves the
//! previous database intact.
//!
//! Tables:
//! - `results`: `sweep, idx, run`, one column per parameter, `class`
//!   (done / failed / conflict / missing), `status`, `exit_code`, `runs`
//!   (distinct runs seen), `attempt`, `receive_count`, `worker`, `run_id`,
//!   `started_ms`, `duration_ms`, `stdout`, `stderr_tail`, `metrics_json`,
//!   then one column per metric. A metric Python printed as `Infinity` or
//!   `-Infinity` is a REAL infinity; one printed as `NaN` is NULL (SQLite
//!   stores no NaN), and `metrics_json` keeps `"NaN"`, which the exports
//!   write back as `NaN`.
//! - `reports`: the reconciliation report of each sweep, as JSON.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{params_from_iter, Connection};

use crate::core::manifest::Manifest;
use crate::core::reconciler::{Fate, KeyClass, RecordSink, Report};
use crate::core::{ResultMessage, ResultView};
use crate::sweep::Value;

/// Columns tally itself writes; a parameter or metric with one of these
/// names gets a `param_` or `metric_` prefix.
const FIXED: [&str; 18] = [
    "sweep",
    "idx",
    "run",
    "class",
    "status",
    "exit_code",
    "runs",
    "attempt",
    "receive_count",
    "worker",
    "run_id",
    "started_ms",
    "duration_ms",
    "stdout",
    "stderr_tail",
    "metrics_json",
    "rowid",
    "oid",
];

/// Quote an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column(name: &str, prefix: &str, taken: &BTreeSet<String>) -> String {
    if FIXED.contains(&name.to_ascii_lowercase().as_str()) || taken.contains(&name.to_ascii_lowercase()) {
        format!("{prefix}{name}")
    } else {
        name.to_owned()
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Int(i) => V::Integer(*i),
        Value::Float(f) => V::Real(*f),
        Value::Str(s) => V::Text(s.clone()),
    }
}

/// A results database being built for one sweep.
pub struct ResultsDb {
    conn: Connection,
    tmp: PathBuf,
    path: PathBuf,
    manifest: Manifest,
    param_columns: Vec<String>,
    error: Option<rusqlite::Error>,
}

impl ResultsDb {
    /// Start building the database for `manifest` at `path`. If `path`
    /// already holds other sweeps, they are kept.
    pub fn create(path: &Path, manifest: &Manifest) -> rusqlite::Result<Self> {
        let tmp = path.with_extension(format!("sqlite.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if path.exists() {
            std::fs::copy(path, &tmp).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        let conn = Connection::open(&tmp)?;
        conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;")?;
        let mut taken = BTreeSet::new();
        let param_columns: Vec<String> = manifest
            .sweep
            .param_names()
            .iter()
            .map(|n| {
                let c = column(n, "param_", &taken);
                taken.insert(c.to_ascii_lowercase());
                c
            })
            .collect();
        // All sweeps share one table; a sweep's rows replace its previous
        // rows, and parameter and metric columns are added as needed.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS results(sweep TEXT NOT NULL, idx INTEGER NOT NULL, run INTEGER NOT NULL,
                class TEXT NOT NULL, status TEXT, exit_code INTEGER, runs INTEGER NOT NULL, attempt INTEGER,
                receive_count INTEGER, worker TEXT, run_id TEXT, started_ms INTEGER, duration_ms INTEGER,
                stdout TEXT, stderr_tail TEXT, metrics_json TEXT, PRIMARY KEY(sweep, idx));
             CREATE TABLE IF NOT EXISTS reports(sweep TEXT PRIMARY KEY, report TEXT NOT NULL);",
        )?;
        conn.execute("DELETE FROM results WHERE sweep=?1", [&manifest.id])?;
        let existing = existing_columns(&conn)?;
        for c in &param_columns {
            if !existing.contains(&c.to_ascii_lowercase()) {
                conn.execute_batch(&format!("ALTER TABLE results ADD COLUMN {}", ident(c)))?;
            }
        }
        Ok(Self {
            conn,
            tmp,
            path: path.to_owned(),
            manifest: manifest.clone(),
            param_columns,
            error: None,
        })
    }

    fn insert_chosen(&mut self, r: &ResultMessage) -> rusqlite::Result<()> {
        use rusqlite::types::Value as V;
        let params = self.manifest.sweep.params(r.index);
        let cols: Vec<String> = self.param_columns.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "INSERT OR REPLACE INTO results(sweep, idx, run, class, status, exit_code, runs, attempt, receive_count,
                worker, run_id, started_ms, duration_ms, stdout, stderr_tail, metrics_json{}{})
             VALUES(?1, ?2, ?3, 'done', ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14{})",
            if cols.is_empty() { "" } else { ", " },
            cols.join(", "),
            (0..cols.len()).map(|i| format!(", ?{}", i + 15)).collect::<String>(),
        );
        let o = &r.outcome;
        let mut values: Vec<V> = vec![
            V::Text(r.sweep.clone()),
            V::Integer(r.index as i64),
            V::Integer((r.index % self.manifest.sweep.runs) as i64),
            V::Text(o.status.as_str().into()),
            o.exit_code.map_or(V::Null, |c| V::Integer(i64::from(c))),
            V::Integer(i64::from(r.attempt)),
            V::Integer(i64::from(r.receive_count)),
            V::Text(r.worker.clone()),
            V::Text(r.run_id.clone()),
            V::Integer(r.started_ms as i64),
            V::Integer(r.duration_ms as i64),
            o.stdout.clone().map_or(V::Null, V::Text),
            V::Text(o.stderr_tail.clone()),
            o.metrics
                .as_ref()
                .map_or(V::Null, |m| V::Text(serde_json::Value::Object(m.clone()).to_string())),
        ];
        for name in &self.manifest.sweep.param_names() {
            values.push(
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(V::Null, |(_, v)| to_sql(v)),
            );
        }
        self.conn.prepare_cached(&sql)?.execute(params_from_iter(values))?;
        Ok(())
    }

    /// A row for a key without a result (`missing` or `cancelled`), with
    /// its parameters, so the database lists every key.
    fn insert_missing(&mut self, index: u64, class: KeyClass) -> rusqlite::Result<()> {
        let cols: Vec<String> = self.param_columns.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "INSERT OR REPLACE INTO results(sweep, idx, run, class, runs{}{}) VALUES(?1, ?2, ?3, '{}', 0{})",
            if cols.is_empty() { "" } else { ", " },
            cols.join(", "),
            class.as_str(),
            (0..cols.len()).map(|i| format!(", ?{}", i + 4)).collect::<String>(),
        );
        let params = self.manifest.sweep.params(index);
        let mut values = vec![
            rusqlite::types::Value::Text(self.manifest.id.clone()),
            rusqlite::types::Value::Integer(index as i64),
            rusqlite::types::Value::Integer((index % self.manifest.sweep.runs) as i64),
        ];
        for name in &self.manifest.sweep.param_names() {
            values.push(
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(rusqlite::types::Value::Null, |(_, v)| to_sql(v)),
            );
        }
        self.conn.prepare_cached(&sql)?.execute(params_from_iter(values))?;
        Ok(())
    }

    /// Add one column per metric, store the report, and move the finished
    /// database into place.
    pub fn finish(mut self, report: &Report) -> rusqlite::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let names: Vec<String> = {
            let mut stmt = self.conn.prepare(
                "SELECT DISTINCT j.key FROM results, json_each(results.metrics_json) AS j
                 WHERE results.sweep=?1 AND results.metrics_json IS NOT NULL ORDER BY j.key",
            )?;
            let rows = stmt.query_map([&self.manifest.id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut taken: BTreeSet<String> = existing_columns(&self.conn)?;
        for p in &self.param_columns {
            taken.insert(p.to_ascii_lowercase());
        }
        for name in names {
            let mut col = column(&name, "metric_", &BTreeSet::new());
            if self.param_columns.iter().any(|p| p.eq_ignore_ascii_case(&col)) {
                col = format!("metric_{name}");
            }
            if !taken.contains(&col.to_ascii_lowercase()) {
                self.conn
                    .execute_batch(&format!("ALTER TABLE results ADD COLUMN {}", ident(&col)))?;
                taken.insert(col.to_ascii_lowercase());
            }
            let path = format!("$.{}", serde_json::to_string(&name).expect("a name serialises"));
            // Non-finite numbers travel as strings (experiment::quote_non_finite);
            // SQLite keeps infinities as REAL but turns any NaN into NULL.
            self.conn.execute(
                &format!(
                    "UPDATE results SET {} = CASE json_extract(metrics_json, ?1)
                        WHEN 'Infinity' THEN 9e999 WHEN '-Infinity' THEN -9e999 WHEN 'NaN' THEN NULL
                        ELSE json_extract(metrics_json, ?1) END
                     WHERE sweep=?2",
                    ident(&col)
                ),
                rusqlite::params![path, self.manifest.id],
            )?;
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO reports(sweep, report) VALUES(?1, ?2)",
            rusqlite::params![
                self.manifest.id,
                serde_json::to_string(report).expect("a report serialises")
            ],
        )?;
        self.conn.execute_batch("COMMIT;")?;
        // Closed before the rename (an in-memory one takes its place until
        // the drop).
        drop(std::mem::replace(&mut self.conn, Connection::open_in_memory()?));
        std::fs::rename(&self.tmp, &self.path).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

fn existing_columns(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('results')")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.map(|s| s.to_ascii_lowercase())).collect()
}

impl RecordSink for ResultsDb {
    fn record(&mut self, _view: &ResultView<'_>, body: &str, verdict: Fate) {
        if verdict == Fate::Chosen && self.error.is_none() {
            let inserted = ResultMessage::decode(body)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
                .and_then(|result| self.insert_chosen(&result));
            if let Err(e) = inserted {
                self.error = Some(e);
            }
        }
    }

    fn class(&mut self, index: u64, class: KeyClass, runs: u32) {
        if self.error.is_some() {
            return;
        }
        let outcome = match class {
            KeyClass::Missing | KeyClass::Cancelled => self.insert_missing(index, class),
            KeyClass::Done if runs == 1 => Ok(()),
            _ => self
                .conn
                .prepare_cached("UPDATE results SET class=?1, runs=?2 WHERE sweep=?3 AND idx=?4")
                .and_then(|mut s| s.execute(rusqlite::params![class.as_str(), runs, self.manifest.id, index as i64]))
                .map(|_| ()),
        };
        if let Err(e) = outcome {
            self.error = Some(e);
        }
    }
}

/// A database dropped before [`ResultsDb::finish`] (a stop mid-way, an
/// error) leaves no temporary file behind; the previous database stands.
impl Drop for ResultsDb {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut name = self.tmp.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A float as Python writes it, non-finite ones included.
fn python_float(f: f64) -> String {
    match f {
        f if f.is_nan() => "NaN".into(),
        f64::INFINITY => "Infinity".into(),
        f64::NEG_INFINITY => "-Infinity".into(),
        f => f.to_string(),
    }
}

/// The metric columns of a row that hold a NaN: NULL in SQLite, `"NaN"` in
/// `metrics_json`.
fn nan_columns(row: &rusqlite::Row<'_>, metrics_at: Option<usize>) -> rusqlite::Result<Vec<String>> {
    let Some(i) = metrics_at else { return Ok(Vec::new()) };
    let Some(text) = row.get_ref(i)?.as_str_or_null()? else {
        return Ok(Vec::new());
    };
    if !text.contains("\"NaN\"") {
        return Ok(Vec::new());
    }
    let metrics: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap_or_default();
    Ok(metrics
        .into_iter()
        .filter(|(_, v)| v == "NaN")
        .flat_map(|(k, _)| [format!("metric_{k}"), k])
        .collect())
}

/// One field of an export, as text: `None` for NULL.
fn export_field(value: rusqlite::types::ValueRef<'_>, nan: bool) -> Option<String> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null if nan => Some("NaN".into()),
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(python_float(f)),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// The sweeps that have rows in the results database, in order.
pub fn sweeps(db: &Path) -> anyhow::Result<Vec<String>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT DISTINCT sweep FROM results ORDER BY sweep")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Writes one exported row, given its fields as text.
type EmitRow<'a> = dyn FnMut(&rusqlite::Row<'_>, &[Option<String>]) -> anyhow::Result<()> + 'a;

/// Write the `results` rows of `sweep` (all sweeps if `None`) to `out`;
/// returns how many rows were written.
pub fn export(db: &Path, sweep: Option<&str>, format: Format, out: &mut dyn std::io::Write) -> anyhow::Result<u64> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT * FROM results WHERE ?1 IS NULL OR sweep=?1 ORDER BY sweep, idx")?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let mut rows = stmt.query([sweep])?;
    let mut count = 0;
    let mut each_row = |emit: &mut EmitRow<'_>| {
        let metrics_at = names.iter().position(|n| n == "metrics_json");
        while let Some(row) = rows.next()? {
            count += 1;
            let nan = nan_columns(row, metrics_at)?;
            let mut fields = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                fields.push(export_field(row.get_ref(i)?, nan.contains(name)));
            }
            emit(row, &fields)?;
        }
        anyhow::Ok(())
    };
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(&names)?;
            each_row(&mut |_, fields| Ok(w.write_record(fields.iter().map(|f| f.as_deref().unwrap_or("")))?))?;
            w.flush()?;
        }
        Format::Jsonl => each_row(&mut |row, fields| write_json_line(out, &names, row, fields))?,
    }
    Ok(count)
}

/// One row as a JSON object. Numbers are written bare, non-finite ones as
/// Python's `json.dumps` writes them (`NaN`, `Infinity`, `-Infinity`), so
/// pandas and Python's `json` read them back as floats.
fn write_json_line(
    out: &mut dyn std::io::Write,
    names: &[String],
    row: &rusqlite::Row<'_>,
    fields: &[Option<String>],
) -> anyhow::Result<()> {
    use rusqlite::types::ValueRef;
    let mut line = String::from("{");
    for (i, (name, field)) in names.iter().zip(fields).enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&serde_json::to_string(name)?);
        line.push(':');
        match (row.get_ref(i)?, field) {
            (_, None) => line.push_str("null"),
            (ValueRef::Text(_) | ValueRef::Blob(_), Some(text)) => line.push_str(&serde_json::to_string(text)?),
            (ValueRef::Real(f), Some(_)) if f.is_finite() => line.push_str(&serde_json::to_string(&f)?),
            (_, Some(number)) => line.push_str(number),
        }
    }
    line.push_str("}\n");
    out.write_all(line.as_bytes())?;
    Ok(())
}
