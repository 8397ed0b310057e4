//! Sweep files: a parameter grid and/or an explicit list of settings, a
//! number of runs per setting, and the experiment to run.
//!
//! A sweep expands to jobs `0..len()`; job `i` is run `i % runs` of setting
//! `i / runs`. Explicit settings come first, then the grid's product in
//! parameter-name order with the last name varying fastest. Expansion is
//! computed per index, so a sweep of millions of jobs takes no memory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A parameter value: a TOML scalar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
}

impl Value {
    /// The text substituted into a command argument.
    pub fn to_arg(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
            Self::Float(f) => f.to_string(),
            Self::Str(s) => s.clone(),
        }
    }
}

/// What to run for each job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// An external program and its arguments; `{name}` is replaced by a
    /// parameter's value, `{index}`, `{run}` and `{sweep}` by the job's.
    /// Run directly, never through a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Working directory for the command, relative to the sweep file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A built-in experiment instead of a command: `"synthetic"`, a
    /// deterministic function of the parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// For the built-in experiment: how long each job takes, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
    /// For the built-in experiment: every n-th job fails (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fail_every: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Most bytes of a sweep's name.
pub const NAME_MAX: usize = 64;

/// Whether `s` is 1 to `max` letters, digits, '-' or '_': what a sweep's
/// name is (at most [`NAME_MAX`]), and so what its id is made of.
pub fn is_name_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A validated sweep. It is also the manifest stored in the blob store, so
/// workers anywhere can expand job indices to parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// A short name; the sweep's id is derived from it and the content.
    pub name: String,
    /// Runs per parameter setting.
    #[serde(default = "default_runs")]
    pub runs: u64,
    /// Per-job timeout, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Receives of one job message without a result before it is recorded
    /// as given up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The experiment.
    pub experiment: ExperimentSpec,
    /// Parameter grid: each name takes every value in its list.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Explicit parameter settings, run before the grid's.
    #[serde(default)]
    pub settings: Vec<BTreeMap<String, Value>>,
}

fn default_runs() -> u64 {
    1
}
fn default_timeout_s() -> u64 {
    3600
}
fn default_max_attempts() -> u32 {
    3
}

/// A sweep file that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SweepError {
    /// The file.
    pub path: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, in one sentence.
    pub message: String,
}

const RESERVED: [&str; 3] = ["index", "run", "sweep"];
/// The hint for a brace that was meant literally.
const LITERAL_BRACES: &str = " (a literal brace is written {{ or }})";
/// Most jobs one sweep may have.
pub const JOBS_MAX: u64 = 1 << 40;

impl Sweep {
    /// Read and validate a sweep file.
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError {
            path: path.display().to_string(),
            line: None,
            message: format!("cannot read the sweep file: {e}"),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parse and validate sweep text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, SweepError> {
        let line_of = |offset: usize| Some(text[..offset.min(text.len())].matches('\n').count() + 1);
        let err = |line: Option<usize>, message: String| SweepError {
            path: path.to_owned(),
            line,
            message,
        };
        let sweep: Sweep = toml::from_str(text).map_err(|e: toml::de::Error| {
            let mut message = e.message().trim().trim_end_matches('.').to_owned();
            // serde's words for a value of the wrong type, said in the user's.
            if message.contains("untagged enum Value") {
                message = "a parameter value must be an integer, a float, a string or a boolean, not a table, an array or a date".into();
            }
            err(e.span().and_then(|s| line_of(s.start)), message)
        })?;
        if let Some((name, f)) = sweep.non_finite_value() {
            return Err(err(
                value_line(text, &name),
                format!("parameter {name:?} has the value {f}; parameter values must be finite numbers, strings or booleans"),
            ));
        }
        // Point semantic errors at the line that names the offending key.
        sweep
            .validate()
            .map_err(|(key, message)| err(key.and_then(|k| key_line(text, &k)), message))?;
        Ok(sweep)
    }

    fn validate(&self) -> Result<(), (Option<String>, String)> {
        if !is_name_text(&self.name, NAME_MAX) {
            return Err((
                Some("name".into()),
                format!(
                    "name {:?} must be 1 to {NAME_MAX} letters, digits, '-' or '_'",
                    self.name
                ),
            ));
        }
        if self.runs == 0 {
            return Err((Some("runs".into()), "runs must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err((Some("max_attempts".into()), "max_attempts must be at least 1".into()));
        }
        if self.timeout_s == 0 {
            return Err((Some("timeout_s".into()), "timeout_s must be at least 1".into()));
        }
        for (name, values) in &self.grid {
            if values.is_empty() {
                return Err((Some(name.clone()), format!("grid parameter {name:?} has no values")));
            }
        }
        for name in self.grid.keys().chain(self.settings.iter().flat_map(|s| s.keys())) {
            if RESERVED.contains(&name.as_str()) || !is_identifier(name) {
                return Err((
                    Some(name.clone()),
                    format!("parameter name {name:?} must be an identifier other than index, run or sweep"),
                ));
            }
        }
        self.validate_experiment()?;
        if self.len().is_none() {
            return Err((None, format!("the sweep expands to more than {JOBS_MAX} jobs")));
        }
        Ok(())
    }

    /// A NaN or infinite parameter value, which has no JSON form: it would
    /// reach the manifest as null and every job using it be quarantined.
    fn non_finite_value(&self) -> Option<(String, f64)> {
        let grid = self.grid.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k, v)));
        grid.chain(self.settings.iter().flat_map(|s| s.iter()))
            .find_map(|(k, v)| match v {
                Value::Float(f) if !f.is_finite() => Some((k.clone(), *f)),
                _ => None,
            })
    }

    fn validate_experiment(&self) -> Result<(), (Option<String>, String)> {
        let e = &self.experiment;
        match (&e.command, &e.builtin) {
            (Some(_), Some(_)) | (None, None) => Err((
                Some("[experiment]".into()),
                "[experiment] needs exactly one of command or builtin".into(),
            )),
            (None, Some(b)) if b != "synthetic" => Err((
                Some("builtin".into()),
                format!("unknown builtin experiment {b:?}; the one built in is \"synthetic\""),
            )),
            (None, Some(_)) => Ok(()),
            (Some(argv), None) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err((
                        Some("command".into()),
                        "command must name a program as its first element".into(),
                    ));
                }
                for arg in argv {
                    for name in placeholders(arg).map_err(|m| (Some("command".into()), m))? {
                        self.check_placeholder(&name)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn check_placeholder(&self, name: &str) -> Result<(), (Option<String>, String)> {
        if RESERVED.contains(&name) {
            return Ok(());
        }
        let in_grid = self.grid.is_empty() || self.grid.contains_key(name);
        let in_settings = self.settings.iter().all(|s| s.contains_key(name));
        let any_settings = !self.grid.is_empty() || !self.settings.is_empty();
        if !any_settings || !in_grid || !in_settings {
            return Err((
                Some("command".into()),
                format!("command uses {{{name}}} but not every parameter setting defines {name:?}{LITERAL_BRACES}"),
            ));
        }
        Ok(())
    }

    /// The number of parameter settings.
    pub fn settings_len(&self) -> Option<u64> {
        let grid = if self.grid.is_empty() && !self.settings.is_empty() {
            0
        } else {
            self.grid
                .values()
                .try_fold(1u64, |acc, v| acc.checked_mul(v.len() as u64))?
        };
        grid.checked_add(self.settings.len() as u64)
    }

    /// The number of jobs, or `None` if it exceeds [`JOBS_MAX`].
    pub fn len(&self) -> Option<u64> {
        self.settings_len()?.checked_mul(self.runs).filter(|n| *n <= JOBS_MAX)
    }

    /// True if the sweep has no jobs (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The sweep's id: its name and a hash of its content, so editing the
    /// file makes a new sweep and rerunning the same file resumes.
    pub fn id(&self) -> String {
        let canonical = serde_json::to_string(self).expect("a sweep always serialises");
        format!(
            "{}-{:08x}",
            self.name,
            xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()) as u32
        )
    }

    /// Parameter values of job `index`, in name order. `index < len()`.
    pub fn params(&self, index: u64) -> Vec<(String, Value)> {
        let setting = index / self.runs;
        let explicit = self.settings.len() as u64;
        if setting < explicit {
            let s = &self.settings[setting as usize];
            return s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        let mut rest = setting - explicit;
        let mut out: Vec<(String, Value)> = Vec::with_capacity(self.grid.len());
        for (name, values) in self.grid.iter().rev() {
            let n = values.len() as u64;
            out.push((name.clone(), values[(rest % n) as usize].clone()));
            rest /= n;
        }
        out.reverse();
        out
    }

    /// The job spec for `index`.
    pub fn job(&self, id: &str, index: u64) -> JobSpec {
        JobSpec {
            sweep: id.to_owned(),
            index,
            run: index % self.runs,
            params: self.params(index),
        }
    }

    /// Every parameter name used by any setting, in order.
    pub fn param_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.grid.keys().cloned().collect();
        for s in &self.settings {
            for k in s.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names
    }
}

/// The 1-based line that gives `key` a NaN or infinite value, or failing
/// that the first that defines it.
fn value_line(text: &str, key: &str) -> Option<usize> {
    let non_finite = |line: &str| {
        let value = line.split_once('=').map_or("", |(_, v)| v).to_ascii_lowercase();
        value.contains("nan") || value.contains("inf")
    };
    text.lines()
        .position(|line| defines(line, key) && non_finite(line))
        .map(|i| i + 1)
        .or_else(|| key_line(text, key))
}

fn defines(line: &str, key: &str) -> bool {
    let line = line.trim_start();
    let rest = line
        .strip_prefix(key)
        .or_else(|| line.strip_prefix(&format!("\"{key}\"")));
    rest.is_some_and(|r| r.trim_start().starts_with('='))
}

/// The 1-based line that defines `key` (`key = ...`) or is the table
/// header `key` (`[experiment]`).
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            if key.starts_with('[') {
                return line.starts_with(key);
            }
            defines(line, key)
        })
        .map(|i| i + 1)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The placeholder names in one argument template. `{{` and `}}` are
/// literal braces.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    render(template, |name| {
        out.push(name.to_owned());
        Some(String::new())
    })?;
    Ok(out)
}

/// Substitute placeholders in one argument template using `lookup`.
pub fn render(template: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("argument {template:?} has an unmatched '}}'{LITERAL_BRACES}"));
        }
        let end = tail
            .find('}')
            .ok_or_else(|| format!("argument {template:?} has an unclosed '{{'{LITERAL_BRACES}"))?;
        let name = &tail[1..end];
        let value = lookup(name).ok_or_else(|| format!("argument {template:?} uses unknown placeholder {{{name}}}"))?;
        out.push_str(&value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What an experiment is asked to run: one job of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The sweep's id.
    pub sweep: String,
    /// Dense index of the job in the expanded sweep.
    pub index: u64,
    /// Which run of its parameter setting this job is (0-based).
    pub run: u64,
    /// Parameter values, by name, in name order.
    pub params: Vec<(String, Value)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
runs = 2

[experiment]
command = ["prog", "--lr={lr}", "--depth", "{depth}", "{{literal}}", "{run}"]

[grid]
lr = [0.1, 1.0]
depth = [2, 4, 8]
"#;

    #[test]
    fn grid_expands_densely_with_last_name_fastest() {
        let s = Sweep::parse("good.toml", GOOD).unwrap();
        assert_eq!(s.len(), Some(12));
        let p = |i| s.params(i).into_iter().map(|(_, v)| v.to_arg()).collect::<Vec<_>>();
        assert_eq!(p(0), vec!["2", "0.1"]);
        assert_eq!(p(1), vec!["2", "0.1"]);
        assert_eq!(p(2), vec!["2", "1.0"]);
        assert_eq!(p(4), vec!["4", "0.1"]);
        assert_eq!(p(11), vec!["8", "1.0"]);
        assert_eq!(s.job("x", 3).run, 1);
    }

    #[test]
    fn explicit_settings_come_before_the_grid() {
        let text = format!("{GOOD}\n[[settings]]\nlr = 9.5\ndepth = 1\n");
        let s = Sweep::parse("s.toml", &text).unwrap();
        assert_eq!(s.len(), Some(14));
        assert_eq!(s.params(0)[1].1, Value::Float(9.5));
        assert_eq!(s.params(2)[0].1, Value::Int(2));
    }

    #[test]
    fn id_changes_with_content_only() {
        let a = Sweep::parse("a", GOOD).unwrap();
        let b = Sweep::parse("b", &GOOD.replace("runs = 2", "runs = 2\n# comment")).unwrap();
        let c = Sweep::parse("c", &GOOD.replace("runs = 2", "runs = 3")).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert!(a.id().starts_with("demo-"));
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let e = Sweep::parse("f.toml", &GOOD.replace("runs = 2", "runs = \"two\"")).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = Sweep::parse("f.toml", &GOOD.replace("depth = [2, 4, 8]", "depth = []")).unwrap_err();
        assert_eq!(e.line, Some(10), "{e}");
        assert!(e.to_string().contains("no values"), "{e}");
        let e = Sweep::parse("f.toml", &GOOD.replace("\"{run}\"", "\"{seed}\"")).unwrap_err();
        assert!(e.to_string().contains("{seed}"), "{e}");
        let e = Sweep::parse("f.toml", &GOOD.replace("runs = 2", "runz = 2")).unwrap_err();
        assert!(e.to_string().starts_with("f.toml:3: "), "{e}");
        assert!(Sweep::parse("f.toml", "name = [").is_err());
        let e = Sweep::parse(
            "f.toml",
            &GOOD.replace("[experiment]", "[experiment]\nbuiltin = \"synthetic\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
    }

    #[test]
    fn nan_and_infinite_parameter_values_are_refused_with_their_line() {
        for (bad, shown) in [("nan", "NaN"), ("inf", "inf"), ("-inf", "-inf")] {
            let text = GOOD.replace("depth = [2, 4, 8]", &format!("depth = [2, {bad}]"));
            let e = Sweep::parse("f.toml", &text).unwrap_err();
            assert_eq!(e.line, Some(10), "{e}");
            assert!(
                e.to_string().contains(&format!("\"depth\" has the value {shown}")),
                "{e}"
            );
            assert!(e.to_string().contains("finite"), "{e}");
        }
        let text = format!("{GOOD}\n[[settings]]\nlr = nan\ndepth = 1\n");
        let e = Sweep::parse("s.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(13), "{e}");
        assert!(e.to_string().contains("\"lr\" has the value NaN"), "{e}");
    }

    #[test]
    fn a_nested_value_says_which_types_are_allowed() {
        for bad in ["x = [[1, 2]]", "x = [{ a = 1 }]", "x = [1979-05-27]"] {
            let text = format!("{GOOD}\n[[settings]]\n{bad}\n").replace("lr = [0.1, 1.0]\ndepth = [2, 4, 8]\n", "");
            let e = Sweep::parse("f.toml", &text).unwrap_err();
            assert!(
                e.to_string()
                    .contains("must be an integer, a float, a string or a boolean"),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains("untagged"), "{e}");
        }
    }

    #[test]
    fn a_brace_meant_literally_gets_a_hint() {
        let text = GOOD.replace("\"{{literal}}\"", "\"{'a': 1}\"");
        let e = Sweep::parse("f.toml", &text).unwrap_err();
        assert!(e.to_string().contains("{{ or }}"), "{e}");
        let text = GOOD.replace("\"{{literal}}\"", "\"a}\"");
        assert!(Sweep::parse("f.toml", &text)
            .unwrap_err()
            .to_string()
            .contains("{{ or }}"));
    }

    const COMMAND: &str = r#"command = ["prog", "--lr={lr}", "--depth", "{depth}", "{{literal}}", "{run}"]"#;

    /// Each rule of a sweep file, broken in turn: refused with the line
    /// that breaks it and a sentence that says which rule.
    #[test]
    fn every_rule_is_checked_and_names_its_line() {
        let long = "n".repeat(NAME_MAX + 1);
        let cases: [(&str, &str, Option<usize>, &str); 15] = [
            ("name = \"demo\"", "name = \"de mo\"", Some(2), "letters, digits"),
            ("name = \"demo\"", &format!("name = \"{long}\""), Some(2), "1 to 64"),
            ("runs = 2", "runs = 0", Some(3), "runs must be at least 1"),
            (
                "runs = 2",
                "runs = 2\nmax_attempts = 0",
                Some(4),
                "max_attempts must be at least 1",
            ),
            (
                "runs = 2",
                "runs = 2\ntimeout_s = 0",
                Some(4),
                "timeout_s must be at least 1",
            ),
            (
                "depth = [2, 4, 8]",
                "index = [2]",
                Some(10),
                "other than index, run or sweep",
            ),
            ("depth = [2, 4, 8]", "\"1x\" = [2]", Some(10), "must be an identifier"),
            ("depth = [2, 4, 8]", "a-b = [2]", Some(10), "must be an identifier"),
            (
                "[experiment]",
                "[experiment]\nbuiltin = \"synthetic\"",
                Some(5),
                "exactly one of",
            ),
            (COMMAND, "builtin = \"other\"", Some(6), "unknown builtin"),
            ("[\"prog\", ", "[\"\", ", Some(6), "must name a program"),
            ("\"{run}\"", "\"{seed}\"", Some(6), "command uses {seed} but"),
            ("\"{run}\"", "\"{x\"", Some(6), "unclosed"),
            (
                "[grid]",
                "[[settings]]\nlr = 1.0\n[grid]",
                Some(6),
                "not every parameter setting defines \"depth\"",
            ),
            ("runs = 2", "runs = 1099511627776", None, "more than 1099511627776 jobs"),
        ];
        for (from, to, line, says) in cases {
            let text = GOOD.replacen(from, to, 1);
            let e = Sweep::parse("f.toml", &text).expect_err(to);
            assert_eq!(e.line, line, "{to}: {e}");
            assert!(e.to_string().contains(says), "{to}: {e}");
        }
        let name = "n".repeat(NAME_MAX);
        assert!(Sweep::parse("f.toml", &GOOD.replace("\"demo\"", &format!("\"{name}\""))).is_ok());
        assert!(Sweep::parse("f.toml", &GOOD.replace("depth =", "_d1 =").replace("{depth}", "{_d1}")).is_ok());
    }

    /// The limit on jobs is inclusive; a placeholder needs every setting to
    /// define it, and a sweep without parameters has none to use.
    #[test]
    fn sizes_and_placeholders_of_sweeps_without_a_grid() {
        let synthetic = |runs: u64| format!("name = \"n\"\nruns = {runs}\n[experiment]\nbuiltin = \"synthetic\"\n");
        let most = Sweep::parse("f.toml", &synthetic(JOBS_MAX)).unwrap();
        assert_eq!((most.len(), most.is_empty()), (Some(JOBS_MAX), false));
        assert!(Sweep::parse("f.toml", &synthetic(JOBS_MAX + 1)).is_err());
        let defaults = Sweep::parse("f.toml", "name = \"n\"\n[experiment]\nbuiltin = \"synthetic\"\n").unwrap();
        assert_eq!((defaults.runs, defaults.timeout_s, defaults.max_attempts), (1, 3600, 3));

        let listed = "name = \"n\"\nruns = 2\n[experiment]\ncommand = [\"p\", \"{x}\"]\n\
                      [[settings]]\nx = 1\n[[settings]]\nx = 2\ny = true\n";
        let s = Sweep::parse("f.toml", listed).unwrap();
        assert_eq!(s.len(), Some(4));
        assert_eq!(s.param_names(), ["x", "y"]);
        assert_eq!(
            s.params(3),
            [("x".to_owned(), Value::Int(2)), ("y".to_owned(), Value::Bool(true))]
        );
        let bare = "name = \"n\"\n[experiment]\ncommand = [\"p\", \"{x}\"]\n";
        let e = Sweep::parse("f.toml", bare).unwrap_err();
        assert!(e.to_string().contains("not every parameter setting defines"), "{e}");
        let unchecked: Sweep = toml::from_str("name = \"n\"\n[experiment]\nbuiltin = \"s\"\n[grid]\na = []\n").unwrap();
        assert!(unchecked.is_empty());
    }

    #[test]
    fn values_become_arguments_as_written() {
        let args: Vec<String> = [
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.0),
            Value::Float(2.25),
            Value::Float(-0.5),
            Value::Float(1e15),
            Value::Float(1e14),
            Value::Str("a b".into()),
        ]
        .iter()
        .map(Value::to_arg)
        .collect();
        assert_eq!(
            args,
            [
                "true",
                "-3",
                "2.0",
                "2.25",
                "-0.5",
                "1000000000000000",
                "100000000000000.0",
                "a b"
            ]
        );
    }

    #[test]
    fn rendering_never_interprets_values() {
        let out = render("--x={x}", |_| Some("; rm -rf / #".into())).unwrap();
        assert_eq!(out, "--x=; rm -rf / #");
        assert_eq!(render("{{a}}", |_| None).unwrap(), "{a}");
        assert!(render("{a", |_| None).is_err());
        assert!(render("a}", |_| None).is_err());
    }
}
