//! Object keys: `{namespace}/{topic}/{partition}/segment-{baseOffset:020}.kfs`.

use object_store::path::Path;

fn base_name(base: i64) -> String {
    format!("segment-{base:020}")
}

pub fn partition_prefix(ns: &str, topic: &str, partition: i32) -> Path {
    Path::from(format!("{ns}/{topic}/{partition}"))
}

pub fn topic_prefix(ns: &str, topic: &str) -> Path {
    Path::from(format!("{ns}/{topic}"))
}

pub fn segment_path(ns: &str, topic: &str, partition: i32, base: i64) -> Path {
    Path::from(format!("{ns}/{topic}/{partition}/{}.kfs", base_name(base)))
}

/// A compacted segment's object: `segment-{base:020}-c{gen:016x}.kfs`, where
/// `base` is the first offset of the range it replaced (its first batch may
/// start later) and `gen` a random, non-zero id that makes the name new, so
/// that the create-only PUT never meets an earlier object. `gen` 0 is the
/// plain name. Listings of plain segments (`parse_segment_base`) skip these.
pub fn object_path(ns: &str, topic: &str, partition: i32, base: i64, gen: u64) -> Path {
    if gen == 0 {
        return segment_path(ns, topic, partition, base);
    }
    Path::from(format!(
        "{ns}/{topic}/{partition}/{}-c{gen:016x}.kfs",
        base_name(base)
    ))
}

/// The `.index` beside `object_path`.
pub fn object_index_path(ns: &str, topic: &str, partition: i32, base: i64, gen: u64) -> Path {
    if gen == 0 {
        return index_path(ns, topic, partition, base);
    }
    Path::from(format!(
        "{ns}/{topic}/{partition}/{}-c{gen:016x}.index",
        base_name(base)
    ))
}

/// `(base, gen)` of a compacted segment's `.kfs` file name (see `object_path`).
pub fn parse_compacted(filename: &str) -> Option<(i64, u64)> {
    let rest = filename.strip_prefix("segment-")?.strip_suffix(".kfs")?;
    let (digits, gen) = rest.split_once("-c")?;
    if digits.len() != 20
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || gen.len() != 16
        || !gen.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let gen = u64::from_str_radix(gen, 16).ok().filter(|g| *g != 0)?;
    Some((digits.parse().ok()?, gen))
}

pub fn index_path(ns: &str, topic: &str, partition: i32, base: i64) -> Path {
    Path::from(format!(
        "{ns}/{topic}/{partition}/{}.index",
        base_name(base)
    ))
}

/// Where a segment that could not be served is kept for inspection:
/// `_quarantine/{namespace}/{topic}/{partition}/segment-….kfs`, outside every
/// namespace's topics, so no listing of a partition sees it again.
pub fn quarantine_path(ns: &str, topic: &str, partition: i32, base: i64) -> Path {
    Path::from(format!(
        "_quarantine/{ns}/{topic}/{partition}/{}.kfs",
        base_name(base)
    ))
}

/// The base offset of a `segment-XXXXXXXXXXXXXXXXXXXX.index` file name.
pub fn parse_index_base(filename: &str) -> Option<i64> {
    let digits = filename.strip_prefix("segment-")?.strip_suffix(".index")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The base offset of a `segment-XXXXXXXXXXXXXXXXXXXX.kfs` file name.
pub fn parse_segment_base(filename: &str) -> Option<i64> {
    let digits = filename.strip_prefix("segment-")?.strip_suffix(".kfs")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_keys() {
        let p = segment_path("default", "orders.v1_eu-west", 3, 42);
        assert_eq!(
            p.as_ref(),
            "default/orders.v1_eu-west/3/segment-00000000000000000042.kfs"
        );
        assert_eq!(
            index_path("ns", "t", 0, 0).as_ref(),
            "ns/t/0/segment-00000000000000000000.index"
        );
        assert_eq!(parse_segment_base(p.filename().unwrap()), Some(42));
        assert_eq!(
            parse_segment_base("segment-00000000000000000042.index"),
            None
        );
        assert_eq!(parse_segment_base("segment-42.kfs"), None);
        assert_eq!(partition_prefix("ns", "t", 7).as_ref(), "ns/t/7");
        let c = object_path("ns", "t", 0, 42, 0xab);
        assert_eq!(
            c.as_ref(),
            "ns/t/0/segment-00000000000000000042-c00000000000000ab.kfs"
        );
        assert_eq!(parse_compacted(c.filename().unwrap()), Some((42, 0xab)));
        assert_eq!(parse_segment_base(c.filename().unwrap()), None);
        assert_eq!(parse_compacted(p.filename().unwrap()), None);
        assert_eq!(
            object_path("ns", "t", 0, 42, 0),
            segment_path("ns", "t", 0, 42)
        );
        assert_eq!(
            parse_index_base(object_index_path("ns", "t", 0, 42, 7).filename().unwrap()),
            None
        );
    }
}
