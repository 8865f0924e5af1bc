//! A shard's commit log for the local directory store: what makes a group
//! commit durable with one append and one `fdatasync`, instead of two files
//! created, written, linked and fsynced per partition segment.
//!
//! Every segment a shard seals in one group-commit pass goes into one append
//! (a record per segment: topic, topic id, partition, offsets and the `.kfs`
//! bytes, behind its length and CRC-32C; the `.index` is derived from the `.kfs`
//! when the segment is written out). Once `append` returned, the segments are as
//! durable as a PUT would have made them; they are written to the store's usual
//! files later, several at once, and a log file is removed once every segment
//! in it is in those files.
//!
//! At start, `replay` reads every log file left behind. A crash can leave a
//! file's last record cut short or never synced (garbage or zeroes): it was
//! never acknowledged, so reading a file stops at the first record whose length
//! or checksum does not hold, and what came before it counts.
//!
//! Files are `<dir>/<shard>-<seq>.log`; a shard writes one file at a time and
//! starts a new one (the next `seq`) once the current one holds
//! `max_file_bytes`.
//!
//! Where the filesystem takes it, appends are written with `O_DIRECT` (the page
//! cache would copy every byte once more): each append starts on a block
//! boundary and its last block is padded with zeroes, which reading skips.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Magic of a record: a record that does not start with it ends the file.
const MAGIC: u32 = 0x4B53_4C31; // "KSL1"
/// magic, length of what follows the header, CRC-32C of what follows.
const HEADER: usize = 12;
/// Block size of `O_DIRECT` appends (offsets, lengths and buffer addresses).
const BLOCK: usize = 4096;

/// One segment in a log: what is appended, and what is read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Shared with the partition: a record per segment per append must not
    /// allocate the name again.
    pub topic: Arc<str>,
    /// The topic's id: a log read back after the topic was deleted (and maybe
    /// created again under its name) must not bring the old data back.
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The `.kfs` object's bytes.
    pub segment: Bytes,
}

/// Where a log file sits and which shard and sequence number it has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogFile {
    pub shard: u32,
    pub seq: u64,
    pub path: PathBuf,
}

fn file_name(shard: u32, seq: u64) -> String {
    format!("{shard}-{seq:020}.log")
}

fn parse_name(name: &str) -> Option<(u32, u64)> {
    let (shard, seq) = name.strip_suffix(".log")?.split_once('-')?;
    Some((shard.parse().ok()?, seq.parse().ok()?))
}

/// Every log file in `dir`, by shard and sequence number (none if `dir` does not
/// exist).
pub fn list(dir: &Path) -> io::Result<Vec<LogFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((shard, seq)) = name.to_str().and_then(parse_name) {
            files.push(LogFile {
                shard,
                seq,
                path: entry.path(),
            });
        }
    }
    files.sort();
    Ok(files)
}

/// Encodes `records` into `buf` and returns the range to write: block-aligned
/// in memory and padded with zeroes to whole blocks when `aligned`.
fn encode(records: &[Logged], buf: &mut Vec<u8>, aligned: bool) -> std::ops::Range<usize> {
    buf.clear();
    let size: usize = records
        .iter()
        .map(|r| HEADER + 2 + r.topic.len() + 16 + 4 + 8 + 8 + 4 + r.segment.len())
        .sum();
    // Reserved up front, so the buffer does not move once aligned.
    buf.reserve(size + 2 * BLOCK);
    let start = if aligned {
        buf.as_ptr().align_offset(BLOCK)
    } else {
        0
    };
    buf.resize(start, 0);
    for r in records {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER]);
        // A topic name is at most 249 bytes (Kafka's rule, checked at creation).
        buf.extend_from_slice(&(r.topic.len() as u16).to_be_bytes());
        buf.extend_from_slice(r.topic.as_bytes());
        buf.extend_from_slice(&r.topic_id);
        buf.extend_from_slice(&r.partition.to_be_bytes());
        buf.extend_from_slice(&r.base_offset.to_be_bytes());
        buf.extend_from_slice(&r.last_offset.to_be_bytes());
        buf.extend_from_slice(&(r.segment.len() as u32).to_be_bytes());
        buf.extend_from_slice(&r.segment);
        let body = &buf[start + HEADER..];
        let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
        let head = &mut buf[start..start + HEADER];
        head[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        head[4..8].copy_from_slice(&len.to_be_bytes());
        head[8..12].copy_from_slice(&crc.to_be_bytes());
    }
    if aligned {
        let len = buf.len() - start;
        buf.resize(start + len.div_ceil(BLOCK) * BLOCK, 0);
    }
    start..buf.len()
}

/// Reads the records of one log's bytes, up to the first that does not hold
/// (a torn or never-synced tail). Where zeroes follow a record up to the end
/// of its block, they are an append's padding: the next append starts at the
/// next block.
pub fn decode(data: &Bytes) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        if let Some(r) = decode_one(data, &mut pos) {
            out.push(r);
            continue;
        }
        let next = pos.div_ceil(BLOCK) * BLOCK;
        // Padding is zeroes; anything else is a torn append, and what follows
        // it was never acknowledged.
        let padding = data.get(pos..next.min(data.len())).unwrap_or_default();
        if pos % BLOCK == 0 || padding.iter().any(|&b| b != 0) {
            return out;
        }
        pos = next;
    }
}

fn decode_one(data: &Bytes, pos: &mut usize) -> Option<Logged> {
    let head = data.get(*pos..*pos + HEADER)?;
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let len = usize::try_from(word(4)).ok()?;
    let start = *pos + HEADER;
    let body = data.get(start..start.checked_add(len)?)?;
    if crc32c::crc32c(body) != word(8) {
        return None;
    }
    let mut r = Reader { b: data, at: start };
    let topic_len = usize::from(r.u16()?);
    let topic = Arc::from(std::str::from_utf8(r.take(topic_len)?).ok()?);
    let topic_id: [u8; 16] = r.take(16)?.try_into().ok()?;
    let partition = r.u32()? as i32;
    let base_offset = r.u64()? as i64;
    let last_offset = r.u64()? as i64;
    let seg_len = usize::try_from(r.u32()?).ok()?;
    let segment = r.slice(seg_len)?;
    if r.at != start + len {
        return None;
    }
    *pos = start + len;
    Some(Logged {
        topic,
        topic_id,
        partition,
        base_offset,
        last_offset,
        segment,
    })
}

/// Reads fields out of a record, never past its end.
struct Reader<'a> {
    b: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn slice(&mut self, n: usize) -> Option<Bytes> {
        let end = self.at.checked_add(n)?;
        if end > self.b.len() {
            return None;
        }
        let s = self.b.slice(self.at..end);
        self.at = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }
}

/// Every record of every log file in `dir`, file by file (by shard, then
/// sequence number), each file up to its first record that does not hold.
pub fn replay(dir: &Path) -> io::Result<Vec<(LogFile, Vec<Logged>)>> {
    list(dir)?
        .into_iter()
        .map(|f| {
            let data = Bytes::from(std::fs::read(&f.path)?);
            let records = decode(&data);
            Ok((f, records))
        })
        .collect()
}

/// One shard's writer. Blocking I/O: run it off the shard's executor.
pub struct CommitLogWriter {
    dir: PathBuf,
    shard: u32,
    seq: u64,
    file: File,
    len: u64,
    max_file_bytes: u64,
    /// Appends bypass the page cache.
    direct: bool,
    /// Reused for every append's encoding.
    buf: Vec<u8>,
}

impl CommitLogWriter {
    /// Starts a new file for `shard` after every file of it in `dir` (which it
    /// creates; its entry and the new file's are synced before this returns).
    pub fn open(dir: &Path, shard: u32, max_file_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let direct = crate::durable::direct_supported(dir);
        let seq = list(dir)?
            .iter()
            .filter(|f| f.shard == shard)
            .map(|f| f.seq + 1)
            .max()
            .unwrap_or(0);
        let file = Self::create(dir, shard, seq, direct)?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(CommitLogWriter {
            dir: dir.to_path_buf(),
            shard,
            seq,
            file,
            len: 0,
            max_file_bytes,
            direct,
            buf: Vec::new(),
        })
    }

    fn create(dir: &Path, shard: u32, seq: u64, direct: bool) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = if direct { crate::durable::O_DIRECT } else { 0 };
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .custom_flags(flags)
            .open(dir.join(file_name(shard, seq)))?;
        File::open(dir)?.sync_all()?;
        Ok(file)
    }

    /// The sequence number of the file the next append goes to.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends `records` and syncs them: durable when this returns. Returns the
    /// sequence number of the file they went to (a file is retired only once
    /// every segment in it is in the store's files).
    pub fn append(&mut self, records: &[Logged]) -> io::Result<u64> {
        if self.len >= self.max_file_bytes {
            self.seq += 1;
            self.file = Self::create(&self.dir, self.shard, self.seq, self.direct)?;
            self.len = 0;
        }
        let range = encode(records, &mut self.buf, self.direct);
        let bytes = self.buf.get(range).unwrap_or_default();
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        // A burst's buffer is not kept for the quiet that follows it.
        if self.buf.capacity() > 16 << 20 {
            self.buf = Vec::new();
        }
        Ok(self.seq)
    }

    /// Closes the current file and starts the next one: after a failed append
    /// or sync the current file's state is unknown, so nothing more goes there.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.seq += 1;
        self.len = 0;
        self.file = Self::create(&self.dir, self.shard, self.seq, self.direct)?;
        Ok(())
    }

    /// Removes this shard's file `seq` (every segment in it is in the store's
    /// files). The file being appended to stays.
    pub fn retire(&self, seq: u64) -> io::Result<()> {
        if seq >= self.seq {
            return Ok(());
        }
        match std::fs::remove_file(self.dir.join(file_name(self.shard, seq))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, p: i32, base: i64, seg: &[u8]) -> Logged {
        Logged {
            topic: topic.into(),
            topic_id: [p as u8; 16],
            partition: p,
            base_offset: base,
            last_offset: base + 9,
            segment: Bytes::copy_from_slice(seg),
        }
    }

    #[test]
    fn appends_read_back_in_order_across_files_and_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let seg = vec![7u8; 300];
        let a = [rec("orders", 0, 0, &seg), rec("orders", 1, 0, b"")];
        let b = [rec("orders", 0, 10, b"s2")];
        let c = [rec("clicks", 3, 40, b"s3")];
        let mut w0 = CommitLogWriter::open(&dir, 0, 100).unwrap();
        let mut w1 = CommitLogWriter::open(&dir, 1, 100).unwrap();
        assert_eq!(w0.append(&a).unwrap(), 0);
        // The first file is past its size: the next append starts another.
        assert_eq!(w0.append(&b).unwrap(), 1);
        assert_eq!(w1.append(&c).unwrap(), 0);
        let got: Vec<(u32, u64, Vec<Logged>)> = replay(&dir)
            .unwrap()
            .into_iter()
            .map(|(f, r)| (f.shard, f.seq, r))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, a.to_vec()), (0, 1, b.to_vec()), (1, 0, c.to_vec()),]
        );
        // A writer opened again continues after the files there.
        drop(w0);
        let w0 = CommitLogWriter::open(&dir, 0, 100).unwrap();
        assert_eq!(w0.seq(), 2);
        w0.retire(0).unwrap();
        w0.retire(1).unwrap();
        // The file being appended to is never removed.
        w0.retire(2).unwrap();
        let left: Vec<(u32, u64)> = list(&dir)
            .unwrap()
            .iter()
            .map(|f| (f.shard, f.seq))
            .collect();
        assert_eq!(left, vec![(0, 2), (1, 0)]);
    }

    #[test]
    fn a_torn_tail_ends_the_file_and_what_came_before_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut w = CommitLogWriter::open(&dir, 0, u64::MAX).unwrap();
        let first = [rec("t", 0, 0, b"first-segment")];
        let second = [rec("t", 0, 10, b"second-segment")];
        w.append(&first).unwrap();
        let one = std::fs::metadata(dir.join(file_name(0, 0))).unwrap().len() as usize;
        w.append(&second).unwrap();
        let full = std::fs::read(dir.join(file_name(0, 0))).unwrap();
        // The second record's own bytes (after them, an O_DIRECT append's padding).
        let record = HEADER + 2 + 1 + 16 + 4 + 8 + 8 + 4 + b"second-segment".len();
        // Cut anywhere inside the second record: only the first is read.
        for cut in one..one + record {
            let got = decode(&Bytes::copy_from_slice(&full[..cut]));
            assert_eq!(got, vec![first[0].clone()], "cut at {cut}");
        }
        assert_eq!(decode(&Bytes::from(full.clone())).len(), 2);
        // A flipped byte anywhere in the second record, or zeroes where it was
        // (a tail allocated but never written), end the file there too.
        for at in one..one + record {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            assert_eq!(
                decode(&Bytes::from(bad)),
                vec![first[0].clone()],
                "flip at {at}"
            );
        }
        let mut zeroed = full[..one].to_vec();
        zeroed.extend(std::iter::repeat_n(0u8, 64));
        assert_eq!(decode(&Bytes::from(zeroed)), vec![first[0].clone()]);
    }

    #[test]
    fn many_appends_to_one_file_read_back_whatever_the_padding() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let mut w = CommitLogWriter::open(&dir, 0, u64::MAX).unwrap();
        let mut all = Vec::new();
        // Sizes around the block size, so appends end inside, at and past a block.
        for (i, n) in [0usize, 1, 4000, 4096, 4097, 10_000, 3]
            .into_iter()
            .enumerate()
        {
            let recs = vec![
                rec("t", 0, i as i64 * 10, &vec![i as u8; n]),
                rec("u", 1, 0, b"x"),
            ];
            w.append(&recs).unwrap();
            all.extend(recs);
        }
        let got: Vec<Logged> = replay(&dir)
            .unwrap()
            .into_iter()
            .flat_map(|(_, r)| r)
            .collect();
        assert_eq!(got, all);
        let len = std::fs::metadata(dir.join(file_name(0, 0))).unwrap().len();
        if w.direct {
            assert_eq!(len % BLOCK as u64, 0, "appends are whole blocks");
        }
    }

    #[test]
    fn lengths_that_point_past_the_end_are_not_read() {
        // A header claiming more bytes than the file has, or a field longer
        // than its record: no panic, nothing read.
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_be_bytes());
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        data.extend_from_slice(&0u32.to_be_bytes());
        assert!(decode(&Bytes::from(data)).is_empty());
        let body = [0u8, 200, b'x'];
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_be_bytes());
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        data.extend_from_slice(&body);
        assert!(decode(&Bytes::from(data)).is_empty());
    }
}
