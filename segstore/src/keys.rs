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
    }
}
