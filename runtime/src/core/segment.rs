//! Segments: immutable batches of result records in the blob store.
//!
//! A segment is JSON Lines, a header line and then one result message body
//! per line exactly as received, compressed as one zstd frame. Its key is a
//! hash of the uncompressed bytes, so uploading the same segment twice is
//! harmless and two different segments can never overwrite each other.
//! Result records are repetitive text: compression shrinks them about
//! tenfold, which is what keeps millions of results cheap to store, move
//! and read back. Segments stored uncompressed (`.jsonl`) still read.

use serde::{Deserialize, Serialize};

use crate::core::message::FORMAT_VERSION;

/// Key prefix under which segments are stored.
pub const PREFIX: &str = "segments/";

/// zstd level: the fastest, since segments are written once per few
/// thousand results on the aggregator's critical path.
const LEVEL: i32 = 1;

/// The largest uncompressed segment a reader accepts. The aggregator's
/// own limit is far below; this only stops a corrupt or hostile frame from
/// claiming a size that cannot be allocated.
pub const BYTES_MAX: u64 = 1 << 30;

/// The first line of a segment.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version.
    pub tally: u32,
    /// The aggregator that wrote it.
    pub aggregator: String,
    /// How many records follow.
    pub records: u64,
}

/// Build a segment's key and stored bytes from result bodies.
pub fn encode(aggregator: &str, bodies: &[String]) -> (String, Vec<u8>) {
    let header = Header {
        tally: FORMAT_VERSION,
        aggregator: aggregator.to_owned(),
        records: bodies.len() as u64,
    };
    let mut text = serde_json::to_vec(&header).expect("a header serialises");
    text.push(b'\n');
    for body in bodies {
        debug_assert!(!body.contains('\n'));
        text.extend_from_slice(body.as_bytes());
        text.push(b'\n');
    }
    let key = format!("{PREFIX}{:032x}.jsonl.zst", xxhash_rust::xxh3::xxh3_128(&text));
    let bytes = zstd::bulk::compress(&text, LEVEL).expect("compressing in memory cannot fail");
    (key, bytes)
}

/// A segment read back: its header and its record lines.
#[derive(Debug)]
pub struct Segment {
    /// The header line.
    pub header: Header,
    text: String,
    body_at: usize,
}

impl Segment {
    /// The record lines, in order.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        self.text[self.body_at..].lines()
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Read a stored segment (compressed, or plain JSON Lines). A truncated,
/// corrupt or foreign segment is an error naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Segment, String> {
    let text = if bytes.starts_with(&ZSTD_MAGIC) {
        let size = match zstd::zstd_safe::get_frame_content_size(bytes) {
            Ok(Some(size)) if size <= BYTES_MAX => size as usize,
            Ok(Some(size)) => return Err(format!("segment claims {size} bytes, over the {BYTES_MAX}-byte limit")),
            Ok(None) | Err(_) => return Err("segment is a zstd frame without a readable size".to_owned()),
        };
        zstd::bulk::decompress(bytes, size).map_err(|e| format!("segment does not decompress: {e}"))?
    } else {
        bytes.to_vec()
    };
    let text = String::from_utf8(text).map_err(|_| "segment is not UTF-8".to_owned())?;
    if !text.ends_with('\n') {
        return Err("segment is truncated (no final newline)".to_owned());
    }
    let first = text.find('\n').expect("ends with a newline");
    let header: Header = serde_json::from_str(&text[..first]).map_err(|_| "segment has no tally header".to_owned())?;
    let segment = Segment {
        header,
        body_at: first + 1,
        text,
    };
    let held = segment.records().count() as u64;
    if held != segment.header.records {
        return Err(format!(
            "segment header says {} records but it holds {held}",
            segment.header.records
        ));
    }
    Ok(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_are_named_by_content() {
        let bodies = vec!["{\"a\":1}".to_owned(), "{\"b\":2}".to_owned()];
        let (key, bytes) = encode("agg", &bodies);
        let (again, _) = encode("agg", &bodies);
        assert_eq!(key, again);
        assert!(key.starts_with(PREFIX) && key.ends_with(".jsonl.zst"));
        assert_ne!(key, encode("agg", &bodies[..1]).0);
        let segment = decode(&bytes).unwrap();
        assert_eq!(segment.header.records, 2);
        assert_eq!(segment.records().collect::<Vec<_>>(), vec!["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn damaged_segments_are_errors() {
        let bodies = vec!["{\"a\":1}".to_owned(); 50];
        let (_, bytes) = encode("agg", &bodies);
        assert!(decode(&bytes[..bytes.len() - 4]).is_err(), "truncated frame");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(decode(&flipped).is_err(), "corrupt frame");
        assert!(decode(b"junk").is_err());
        assert!(decode(&ZSTD_MAGIC).is_err());
    }

    #[test]
    fn plain_segments_still_read() {
        let plain = b"{\"tally\":1,\"aggregator\":\"a\",\"records\":1}\n{\"x\":1}\n";
        let segment = decode(plain).unwrap();
        assert_eq!(segment.records().collect::<Vec<_>>(), vec!["{\"x\":1}"]);
        assert!(decode(&plain[..plain.len() - 1]).is_err(), "no final newline");
        assert!(decode(b"{\"tally\":1,\"aggregator\":\"a\",\"records\":2}\n{\"x\":1}\n").is_err());
    }
}
