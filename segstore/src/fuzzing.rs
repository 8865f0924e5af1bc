//! Fuzz target bodies for the segment formats (see `kafscale_codec::fuzzing`):
//! what the broker parses from the object store must never panic, whatever an
//! object holds.

use bytes::Bytes;

use crate::format::index::parse_index;
use crate::format::segment::{parse_footer, parse_header, Segment};

/// Arbitrary bytes as a `.kfs` object: header, footer, full parse, and the
/// reads a fetch makes of a parsed segment.
pub fn segment(data: &[u8]) {
    let _ = parse_header(data);
    let _ = parse_footer(data);
    if let Ok(seg) = Segment::parse(Bytes::copy_from_slice(data)) {
        for b in &seg.batches {
            assert!((b.pos as usize).saturating_add(b.len as usize) <= seg.data.len());
            let _ = seg.slice_from(b.base_offset, 1);
        }
        let _ = seg.slice_from(seg.last_offset + 1, usize::MAX);
    }
}

/// Arbitrary bytes as a `.index` object.
pub fn index(data: &[u8]) {
    let _ = parse_index(data);
}
