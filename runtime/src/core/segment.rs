//! Segments: immutable batches of result records in the blob store.
//!
//! A segment is JSON Lines: a header line, then one result message body per
//! line, exactly as received. Its key is a hash of its bytes, so uploading
//! the same segment twice is harmless and two different segments can never
//! overwrite each other.

use serde::{Deserialize, Serialize};

use crate::core::message::FORMAT_VERSION;

/// Key prefix under which segments are stored.
pub const PREFIX: &str = "segments/";

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

/// Build a segment's key and bytes from result bodies.
pub fn encode(aggregator: &str, bodies: &[String]) -> (String, Vec<u8>) {
    let header = Header {
        tally: FORMAT_VERSION,
        aggregator: aggregator.to_owned(),
        records: bodies.len() as u64,
    };
    let mut bytes = serde_json::to_vec(&header).expect("a header serialises");
    bytes.push(b'\n');
    for body in bodies {
        debug_assert!(!body.contains('\n'));
        bytes.extend_from_slice(body.as_bytes());
        bytes.push(b'\n');
    }
    let key = format!("{PREFIX}{:032x}.jsonl", xxhash_rust::xxh3::xxh3_128(&bytes));
    (key, bytes)
}

/// Split a segment into its header and record lines. A truncated or
/// foreign segment is an error naming what is wrong.
pub fn decode(bytes: &[u8]) -> Result<(Header, Vec<&str>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "segment is not UTF-8".to_owned())?;
    if !text.ends_with('\n') {
        return Err("segment is truncated (no final newline)".to_owned());
    }
    let mut lines = text.lines();
    let header: Header = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| "segment has no tally header".to_owned())?;
    let records: Vec<&str> = lines.collect();
    if records.len() as u64 != header.records {
        return Err(format!(
            "segment header says {} records but it holds {}",
            header.records,
            records.len()
        ));
    }
    Ok((header, records))
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
        assert_ne!(key, encode("agg", &bodies[..1]).0);
        let (header, records) = decode(&bytes).unwrap();
        assert_eq!(header.records, 2);
        assert_eq!(records, vec!["{\"a\":1}", "{\"b\":2}"]);
        assert!(decode(&bytes[..bytes.len() - 4]).is_err());
        assert!(decode(b"junk").is_err());
    }
}
