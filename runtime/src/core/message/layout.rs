//! Reading messages laid out exactly as tally writes them.
//!
//! Every message tally reads was written by tally's own serde code, so its
//! fields come in one known order, compact, and its strings rarely hold an
//! escape. Checking that layout literally and borrowing its strings costs a
//! quarter of a general JSON decode, and a reconciler reads millions of
//! records. Anything that departs from the layout in any way (another field
//! order, whitespace, an escaped string, a number in another form) is left
//! to the general decoder, so the fast path changes speed, never meaning: a
//! body it reads, it reads exactly as serde would (tests hold the two
//! together on generated and damaged messages).

use serde_json::value::RawValue;

use super::{ResultMessage, ResultStatus, ResultView};

/// A position in a body being read.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Consume `literal`, which must come next.
    fn lit(&mut self, literal: &str) -> Option<()> {
        self.rest()
            .starts_with(literal.as_bytes())
            .then(|| self.at += literal.len())
    }

    /// An unsigned integer as serde writes one: digits, no leading zero.
    fn uint(&mut self) -> Option<u64> {
        let digits = self.rest();
        let mut value: u64 = 0;
        let mut len = 0;
        while let Some(d) = digits.get(len).filter(|d| d.is_ascii_digit()) {
            value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            len += 1;
        }
        if len == 0 || (len > 1 && digits[0] == b'0') {
            return None;
        }
        self.at += len;
        Some(value)
    }

    /// Consume a JSON number, any form the grammar allows.
    fn number(&mut self) -> Option<()> {
        let _ = self.lit("-");
        if self.lit("0").is_none() {
            self.uint()?;
        }
        if self.lit(".").is_some() {
            self.digits()?;
        }
        if self.lit("e").or_else(|| self.lit("E")).is_some() {
            let _ = self.lit("+").or_else(|| self.lit("-"));
            self.digits()?;
        }
        Some(())
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let len = self.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        self.at += len;
        (len > 0).then_some(())
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    /// A signed integer; "-0" is left to the general decoder.
    fn i32(&mut self) -> Option<i32> {
        if self.lit("-").is_some() {
            let magnitude = i64::try_from(self.uint()?).ok()?;
            return (magnitude != 0).then(|| i32::try_from(-magnitude).ok()).flatten();
        }
        i32::try_from(self.uint()?).ok()
    }

    /// A string without escapes or control characters, borrowed.
    fn plain_str(&mut self) -> Option<&'a str> {
        self.lit("\"")?;
        let rest = self.rest();
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[len] != b'"' || rest[..len].iter().any(|&b| b < 0x20) {
            return None;
        }
        // Both ends are ASCII quotes, so both are character boundaries.
        let s = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(s)
    }

    fn null(&mut self) -> bool {
        self.lit("null").is_some()
    }

    /// A JSON object, validated and kept as its text. Objects of plain keys
    /// and numbers (what experiments print) are checked here; any other
    /// object by serde.
    fn raw_object(&mut self) -> Option<&'a str> {
        let start = self.at;
        if let Some(()) = self.flat_object() {
            return Some(&self.text[start..self.at]);
        }
        self.at = start;
        if !self.rest().starts_with(b"{") {
            return None;
        }
        let mut stream = serde_json::Deserializer::from_str(&self.text[self.at..]).into_iter::<&RawValue>();
        let raw = stream.next()?.ok()?;
        self.at += stream.byte_offset();
        Some(raw.get())
    }

    /// `{}` or `{"key":number,...}` with plain keys.
    fn flat_object(&mut self) -> Option<()> {
        self.lit("{")?;
        if self.lit("}").is_some() {
            return Some(());
        }
        loop {
            self.plain_str()?;
            self.lit(":")?;
            self.number()?;
            if self.lit(",").is_none() {
                return self.lit("}");
            }
        }
    }

    fn at_end(&self) -> bool {
        self.at == self.text.len()
    }
}

fn status(name: &str) -> Option<ResultStatus> {
    Some(match name {
        "ok" => ResultStatus::Ok,
        "failed" => ResultStatus::Failed,
        "timed_out" => ResultStatus::TimedOut,
        "gave_up" => ResultStatus::GaveUp,
        _ => return None,
    })
}

/// A result message in exactly the layout [`crate::core::ResultMessage`]
/// serialises to, or `None` for anything else.
pub(crate) fn result_view(body: &str) -> Option<ResultView<'_>> {
    let mut c = Cursor::new(body);
    let (tally, sweep, index, attempt) = key(&mut c)?;
    c.lit(",\"receive_count\":")?;
    let receive_count = c.u32()?;
    c.lit(",\"run_id\":")?;
    let run_id = c.plain_str()?;
    c.lit(",\"worker\":")?;
    let worker = c.plain_str()?;
    c.lit(",\"started_ms\":")?;
    let started_ms = c.uint()?;
    c.lit(",\"duration_ms\":")?;
    let duration_ms = c.uint()?;
    c.lit(",\"status\":")?;
    let status = status(c.plain_str()?)?;
    c.lit(",\"exit_code\":")?;
    let exit_code = if c.null() { None } else { Some(c.i32()?) };
    c.lit(",\"metrics\":")?;
    let metrics = if c.null() { None } else { Some(c.raw_object()?) };
    c.lit(",\"stdout\":")?;
    let stdout = if c.null() { None } else { Some(c.plain_str()?.into()) };
    c.lit(",\"stderr_tail\":")?;
    let stderr_tail = c.plain_str()?;
    c.lit("}")?;
    c.at_end().then(|| ResultView {
        tally,
        sweep: sweep.into(),
        index,
        attempt,
        receive_count,
        run_id: run_id.into(),
        worker: worker.into(),
        started_ms,
        duration_ms,
        status,
        exit_code,
        metrics,
        stdout,
        stderr_tail: stderr_tail.into(),
    })
}

/// Whether serde_json writes `s` between quotes exactly as it is.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// `message` in the layout [`result_view`] reads, byte for byte what serde
/// writes, or `None` when a string needs escaping (serde writes those).
pub(crate) fn write_result(m: &ResultMessage) -> Option<String> {
    let o = &m.outcome;
    let strings = [m.sweep.as_str(), &m.run_id, &m.worker, &o.stderr_tail];
    if !strings.iter().all(|s| plain(s)) || !o.stdout.as_deref().is_none_or(plain) {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(200 + strings.iter().map(|s| s.len()).sum::<usize>());
    let mut n = itoa::Buffer::new();
    let mut put = |text: &str| out.extend_from_slice(text.as_bytes());
    put("{\"tally\":");
    put(n.format(m.tally));
    put(",\"sweep\":\"");
    put(&m.sweep);
    put("\",\"index\":");
    put(n.format(m.index));
    put(",\"attempt\":");
    put(n.format(m.attempt));
    put(",\"receive_count\":");
    put(n.format(m.receive_count));
    put(",\"run_id\":\"");
    put(&m.run_id);
    put("\",\"worker\":\"");
    put(&m.worker);
    put("\",\"started_ms\":");
    put(n.format(m.started_ms));
    put(",\"duration_ms\":");
    put(n.format(m.duration_ms));
    put(",\"status\":\"");
    put(o.status.as_str());
    put("\",\"exit_code\":");
    match o.exit_code {
        Some(code) => put(n.format(code)),
        None => put("null"),
    }
    put(",\"metrics\":");
    match &o.metrics {
        Some(map) => serde_json::to_writer(&mut out, map).ok()?,
        None => out.extend_from_slice(b"null"),
    }
    match &o.stdout {
        Some(stdout) => out.extend_from_slice(format!(",\"stdout\":\"{stdout}\"").as_bytes()),
        None => out.extend_from_slice(b",\"stdout\":null"),
    }
    out.extend_from_slice(b",\"stderr_tail\":\"");
    out.extend_from_slice(o.stderr_tail.as_bytes());
    out.extend_from_slice(b"\"}");
    String::from_utf8(out).ok()
}

/// A job message in exactly the layout [`crate::core::JobMessage`]
/// serialises to, as (tally, sweep, index, attempt), or `None`.
pub(crate) fn job(body: &str) -> Option<(u32, &str, u64, u32)> {
    let mut c = Cursor::new(body);
    let key = key(&mut c)?;
    c.lit("}")?;
    c.at_end().then_some(key)
}

/// The opening both messages share: version, sweep, index, attempt.
fn key<'a>(c: &mut Cursor<'a>) -> Option<(u32, &'a str, u64, u32)> {
    c.lit("{\"tally\":")?;
    let tally = c.u32()?;
    c.lit(",\"sweep\":")?;
    let sweep = c.plain_str()?;
    c.lit(",\"index\":")?;
    let index = c.uint()?;
    c.lit(",\"attempt\":")?;
    let attempt = c.u32()?;
    Some((tally, sweep, index, attempt))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::core::{JobMessage, Outcome};

    /// The general decoder's reading, as comparable text.
    fn general(body: &str) -> Option<String> {
        let view: ResultView<'_> = serde_json::from_str(body).ok()?;
        Some(describe(&view))
    }

    fn describe(v: &ResultView<'_>) -> String {
        format!(
            "{} {:?} {} {} {} {:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?}",
            v.tally,
            v.sweep,
            v.index,
            v.attempt,
            v.receive_count,
            v.run_id,
            v.worker,
            v.started_ms,
            v.duration_ms,
            v.status,
            v.exit_code,
            v.metrics,
            v.stdout,
            v.stderr_tail
        )
    }

    fn message(
        text: String,
        numbers: (u64, u32, u32, u64, u64),
        exit_code: Option<i32>,
        status: u8,
        metric: Option<f64>,
    ) -> ResultMessage {
        let metrics = metric.map(|m| {
            let mut map = serde_json::Map::new();
            map.insert(text.clone(), serde_json::json!(m));
            if text.len() % 2 == 1 {
                map.insert("nested".into(), serde_json::json!({"list": [1, "two", null]}));
            }
            map
        });
        ResultMessage {
            tally: 1,
            sweep: format!("sweep-{}", text.len()),
            index: numbers.0,
            attempt: numbers.1,
            receive_count: numbers.2,
            run_id: text.clone(),
            worker: "w".into(),
            started_ms: numbers.3,
            duration_ms: numbers.4,
            outcome: Outcome {
                status: [
                    ResultStatus::Ok,
                    ResultStatus::Failed,
                    ResultStatus::TimedOut,
                    ResultStatus::GaveUp,
                ][usize::from(status % 4)],
                exit_code,
                metrics,
                stdout: metric.is_none().then(|| text.clone()),
                stderr_tail: text,
            },
        }
    }

    #[test]
    fn what_tally_writes_takes_the_fast_path() {
        let m = message("run-1".into(), (5, 1, 2, 3, 4), Some(-3), 0, Some(0.25));
        let body = m.encode();
        let fast = result_view(&body).expect("a plain message is in the layout");
        assert_eq!(describe(&fast), general(&body).unwrap());
        let job = JobMessage::new("s-1", 9, 2).encode();
        assert_eq!(super::job(&job), Some((1, "s-1", 9, 2)));
    }

    #[test]
    fn departures_from_the_layout_go_to_the_general_decoder() {
        let body = message("r".into(), (5, 1, 2, 3, 4), None, 1, None).encode();
        for other in [
            body.replacen("{\"tally\"", "{ \"tally\"", 1),
            body.replacen("\"r\"", "\"\\u0072\"", 1),
            body.replacen(":5,", ":05,", 1),
            body.replacen(":5,", ":5.0,", 1),
            body.replacen("\"r\"", "\"r\u{1}\"", 1),
            format!("{body} "),
        ] {
            assert!(result_view(&other).is_none(), "{other}");
        }
        assert!(super::job("{\"tally\":1,\"index\":1,\"sweep\":\"s\",\"attempt\":1}").is_none());
    }

    #[test]
    fn metrics_outside_the_grammar_are_refused_as_serde_refuses_them() {
        let body = message("rr".into(), (5, 1, 2, 3, 4), Some(0), 0, Some(0.5)).encode();
        let flat = r#""metrics":{"rr":0.5}"#;
        assert!(body.contains(flat), "{body}");
        assert!(result_view(&body).is_some());
        for bad in [
            r#"{"rr":0.5,}"#,
            r#"{"rr":05}"#,
            r#"{"rr":0.}"#,
            r#"{"rr":1e}"#,
            r#"{"rr":-}"#,
            r#"{"rr" 1}"#,
            "{",
        ] {
            let damaged = body.replace(flat, &format!("\"metrics\":{bad}"));
            assert!(result_view(&damaged).is_none(), "{damaged}");
            assert!(general(&damaged).is_none(), "serde reads {damaged}");
        }
        for good in [r#"{"rr":-0.5e-3,"b":1E+2,"c":0}"#, r#"{}"#, r#"{"x":[1,{"y":null}]}"#] {
            let changed = body.replace(flat, &format!("\"metrics\":{good}"));
            let fast = result_view(&changed).expect("in the layout");
            assert_eq!(Some(describe(&fast)), general(&changed));
        }
    }

    /// A refusal by the fast path only costs speed (serde reads the body
    /// instead), so the tests above cannot see one: the metrics experiments
    /// print must be read here, without serde.
    #[test]
    fn flat_metrics_are_read_without_the_general_decoder() {
        for flat in [
            "{}",
            r#"{"a":0}"#,
            r#"{"a":-12.5e-3,"b":7E+2,"c":1.0,"d":-0}"#,
            r#"{"loss":0.125,"steps":4096}"#,
        ] {
            let mut c = Cursor::new(flat);
            assert_eq!(c.flat_object(), Some(()), "{flat}");
            assert!(c.at_end(), "{flat} read whole");
            let mut c = Cursor::new(flat);
            assert_eq!(c.raw_object(), Some(flat));
        }
        for other in [r#"{"a":[1]}"#, r#"{"a":"x"}"#, r#"{"a\"":1}"#, r#"{"a":1 }"#] {
            assert_eq!(Cursor::new(other).flat_object(), None, "{other} is serde's to read");
            assert_eq!(Cursor::new(other).raw_object(), Some(other), "{other}");
        }
    }

    proptest! {
        #[test]
        fn the_fast_path_reads_what_the_general_decoder_reads(
            text in "\\PC{0,12}|[a-z\"\\\\\n\t\u{1}-]{0,8}",
            numbers in (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()),
            exit_code in proptest::option::of(any::<i32>()),
            status in any::<u8>(),
            metric in proptest::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
            edit in (any::<prop::sample::Index>(), 0u8..0x80),
        ) {
            let m = message(text, numbers, exit_code, status, metric);
            let body = serde_json::to_string(&m).unwrap();
            match write_result(&m) {
                Some(written) => prop_assert_eq!(&written, &body),
                None => prop_assert!(body.contains('\\'), "only strings that need escaping leave the fast writer"),
            }
            if let Some(fast) = result_view(&body) {
                prop_assert_eq!(Some(describe(&fast)), general(&body));
            } else {
                // Only escapes in strings send a body tally wrote elsewhere.
                prop_assert!(body.contains('\\'));
            }
            // Damage one ASCII byte: whatever the fast path still accepts,
            // the general decoder must read the same way.
            let mut bytes = body.into_bytes();
            let i = edit.0.index(bytes.len());
            if bytes[i].is_ascii() {
                bytes[i] = edit.1;
                let damaged = String::from_utf8(bytes).expect("ASCII for ASCII keeps UTF-8");
                if let Some(fast) = result_view(&damaged) {
                    prop_assert_eq!(Some(describe(&fast)), general(&damaged), "{}", damaged);
                }
            }
        }
    }
}
