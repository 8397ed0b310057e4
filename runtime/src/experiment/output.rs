//! What is kept of a program's standard output: its head and its tail,
//! with a marker where the middle was cut. Metrics live on the last line,
//! so the last line is kept whole (up to `LAST_LINE_MAX`) however long the
//! log before it was.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest last line kept whole: a metrics object longer than this is cut.
pub const LAST_LINE_MAX: usize = 1024 * 1024;

/// The head and the tail of a stream, and how many bytes between them were
/// dropped.
#[derive(Debug)]
pub struct HeadTail {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: u64,
    /// Trim the tail when it grows to this length: trimming scans for the
    /// last line, so doing it at every read of a long last line would be
    /// quadratic.
    trim_at: usize,
}

impl HeadTail {
    /// Keep the first `head_cap` and (at least) the last `tail_cap` bytes.
    pub fn new(head_cap: usize, tail_cap: usize) -> Self {
        Self {
            head_cap,
            tail_cap,
            head: Vec::new(),
            tail: Vec::new(),
            dropped: 0,
            trim_at: 2 * tail_cap.max(1),
        }
    }

    /// Take in the next bytes of the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.tail.is_empty() && self.dropped == 0 {
            let n = self.head_cap.saturating_sub(self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() >= self.trim_at {
            self.trim();
            self.trim_at = (2 * self.tail.len()).max(2 * self.tail_cap.max(1));
        }
    }

    /// Drop the tail's front, keeping its last `tail_cap` bytes and the
    /// whole of its last non-empty line (up to `LAST_LINE_MAX`).
    fn trim(&mut self) {
        let by_size = self.tail.len().saturating_sub(self.tail_cap);
        let line = last_line_start(&self.tail).max(self.tail.len().saturating_sub(LAST_LINE_MAX));
        let cut = by_size.min(line);
        self.tail.drain(..cut);
        self.dropped += cut as u64;
    }

    /// The kept text, with a marker where bytes were dropped. `tail_max`
    /// bounds the tail further (`usize::MAX`: everything kept, including a
    /// long last line).
    pub fn text(&self, tail_max: usize) -> String {
        let from = self.tail.len().saturating_sub(tail_max);
        let dropped = self.dropped + from as u64;
        let mut kept = self.head.clone();
        if dropped > 0 {
            if !kept.ends_with(b"\n") {
                kept.push(b'\n');
            }
            kept.extend_from_slice(format!("[tally: {dropped} bytes of output omitted]\n").as_bytes());
        }
        kept.extend_from_slice(&self.tail[from..]);
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// Bytes of tail kept by default when the text is not metrics.
    pub fn tail_cap(&self) -> usize {
        self.tail_cap
    }
}

/// Where the last non-empty line of `bytes` starts.
fn last_line_start(bytes: &[u8]) -> usize {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    memchr::memrchr(b'\n', &bytes[..end]).map_or(0, |i| i + 1)
}

/// Read a stream to its end into `kept`. The caller may stop waiting at
/// any time and still use what was read.
pub async fn read_into(mut r: impl AsyncRead + Unpin, kept: &mut HeadTail) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &[u8], head: usize, tail: usize) -> HeadTail {
        let mut kept = HeadTail::new(head, tail);
        for chunk in text.chunks(7) {
            kept.push(chunk);
        }
        kept
    }

    #[test]
    fn short_output_is_kept_whole_without_a_marker() {
        let kept = feed(b"one\ntwo\n", 4, 4);
        assert_eq!(kept.text(usize::MAX), "one\ntwo\n");
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_marks_the_cut() {
        let mut text = Vec::new();
        for i in 0..1000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let kept = feed(&text, 21, 20).text(usize::MAX); // the head ends on a line
        assert!(kept.starts_with("line 0\nline 1\n"), "{kept}");
        assert!(kept.ends_with("line 998\nline 999\n"), "{kept}");
        assert!(kept.contains("bytes of output omitted]"), "{kept}");
        let omitted: usize = kept
            .split("[tally: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let marker = kept.lines().find(|l| l.starts_with("[tally:")).unwrap().len() + 1;
        assert_eq!(kept.len() - marker + omitted, text.len(), "the count is exact: {kept}");
    }

    #[test]
    fn a_long_last_line_is_kept_whole_and_can_be_cut_afterwards() {
        let line = format!("{{\"loss\": 0.5, \"pad\": \"{}\"}}\n", "x".repeat(5000));
        let text = format!("{}{line}", "log\n".repeat(100));
        let kept = feed(text.as_bytes(), 16, 16);
        assert!(kept.text(usize::MAX).ends_with(&line));
        let short = kept.text(kept.tail_cap());
        assert!(short.len() < 100, "{short}");
        assert!(short.ends_with("x\"}\n"), "{short}");
    }
}
