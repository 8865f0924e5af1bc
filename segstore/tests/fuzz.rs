//! Fuzzing in every test run, on the stable toolchain: each fuzz target
//! (`kafscale_codec::fuzzing`, `kafscale_segstore::fuzzing`, the same bodies
//! `fuzz/` runs under cargo-fuzz) is fed a generated corpus of valid inputs and
//! a bounded number of random mutations of them (bit flips, byte overwrites with
//! interesting values, truncation, duplication, splicing), from a fixed seed so
//! that a failure reproduces. `KAFSCALE_FUZZ_ITERATIONS` raises the count
//! (default 20,000 per target, a few seconds in all); `KAFSCALE_FUZZ_SEED`
//! changes the seed.

use kafscale_codec::batch::{build_batch, empty_batch, BatchHeader};
use kafscale_segstore::SegmentBuilder;

/// xorshift64*: no dependency, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [&[u8]; 8] = [
    &[0x00],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0x00, 0x00, 0x00],
    &[0x00, 0x00, 0x00, 0x00],
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                for (k, b) in INTERESTING[rng.below(INTERESTING.len())].iter().enumerate() {
                    if let Some(x) = v.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 if !v.is_empty() => {
                let from = rng.below(v.len());
                let to = from + rng.below(v.len() - from + 1);
                let chunk = v[from..to].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(v.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
            5 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn run(name: &str, corpus: Vec<Vec<u8>>, target: fn(&[u8])) {
    let iterations: usize = std::env::var("KAFSCALE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("KAFSCALE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b61_6673_6361_6c65);
    let mut rng = Rng(seed ^ name.len() as u64 | 1);
    for c in &corpus {
        target(c);
    }
    for i in 0..iterations {
        let base = &corpus[i % corpus.len()];
        let input = mutate(&mut rng, &corpus, base);
        // A panic names the input, so it can be added to the corpus.
        let r = std::panic::catch_unwind(|| target(&input));
        assert!(
            r.is_ok(),
            "{name}: input {input:?} panicked (seed {seed}, iteration {i})"
        );
    }
}

fn frame(api_key: i16, version: i16, body: &[u8], flexible: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&api_key.to_be_bytes());
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&7i32.to_be_bytes());
    m.extend_from_slice(&1i16.to_be_bytes());
    m.push(b'c');
    if flexible {
        m.push(0); // no tagged fields
    }
    m.extend_from_slice(body);
    let mut f = (m.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&m);
    f
}

fn request_corpus() -> Vec<Vec<u8>> {
    let batch = build_batch(0, 1_700_000_000_000, &[b"a", b"bb"]);
    // Produce v3: transactional id null, acks, timeout, [topic [partition records]].
    let mut produce = Vec::new();
    produce.extend_from_slice(&(-1i16).to_be_bytes());
    produce.extend_from_slice(&(-1i16).to_be_bytes());
    produce.extend_from_slice(&30_000i32.to_be_bytes());
    produce.extend_from_slice(&1i32.to_be_bytes());
    produce.extend_from_slice(&1i16.to_be_bytes());
    produce.push(b't');
    produce.extend_from_slice(&1i32.to_be_bytes());
    produce.extend_from_slice(&0i32.to_be_bytes());
    produce.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    produce.extend_from_slice(&batch);
    // Metadata v1: [topics] with one name.
    let mut metadata = 1i32.to_be_bytes().to_vec();
    metadata.extend_from_slice(&1i16.to_be_bytes());
    metadata.push(b't');
    // Metadata v12 (flexible): compact array of one topic (id, compact name), no
    // auto-create flags beyond the booleans, tagged fields.
    let mut metadata12 = vec![2];
    metadata12.extend_from_slice(&[0; 16]);
    metadata12.extend_from_slice(&[2, b't', 0]);
    metadata12.extend_from_slice(&[1, 0, 0]);
    // Fetch v4: replica, max wait, min bytes, max bytes, isolation, [topic [partition]].
    let mut fetch = Vec::new();
    fetch.extend_from_slice(&(-1i32).to_be_bytes());
    fetch.extend_from_slice(&500i32.to_be_bytes());
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes());
    fetch.push(0);
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&1i16.to_be_bytes());
    fetch.push(b't');
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&0i32.to_be_bytes());
    fetch.extend_from_slice(&0i64.to_be_bytes());
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes());
    let mut two = frame(18, 0, &[], false);
    two.extend_from_slice(&frame(3, 1, &metadata, false));
    vec![
        frame(18, 0, &[], false),
        frame(18, 3, &[0, 0, 0], true),
        frame(0, 3, &produce, false),
        frame(3, 1, &metadata, false),
        frame(3, 12, &metadata12, true),
        frame(1, 4, &fetch, false),
        two,
    ]
}

fn batch_corpus() -> Vec<Vec<u8>> {
    let a = build_batch(0, 1, &[b"x"]);
    let b = build_batch(5, 2, &[b"hello", b"world", b""]);
    let mut both = a.clone();
    both.extend_from_slice(&b);
    vec![a, b, both, empty_batch(3, 9, 0)]
}

fn segments() -> Vec<kafscale_segstore::SealedSegment> {
    [(0i64, 1usize), (10, 3), (100, 7)]
        .into_iter()
        .map(|(base, n)| {
            let mut s = SegmentBuilder::new(base, 1_700_000_000_000, 1024);
            for i in 0..n {
                let v = format!("value-{i}");
                let raw = build_batch(0, 1_700_000_000_000 + i as i64, &[v.as_bytes()]);
                let h = BatchHeader::parse(&raw).expect("built batch");
                s.append(&raw, &h, 0);
            }
            s.finish(2)
        })
        .collect()
}

#[test]
fn fuzz_request_frames() {
    run("frame", request_corpus(), kafscale_codec::fuzzing::frame);
}

#[test]
fn fuzz_record_batches() {
    run(
        "record_batch",
        batch_corpus(),
        kafscale_codec::fuzzing::record_batch,
    );
}

#[test]
fn fuzz_segment_objects() {
    let corpus = segments()
        .into_iter()
        .map(|s| s.segment.data.to_vec())
        .collect();
    run("segment", corpus, kafscale_segstore::fuzzing::segment);
}

#[test]
fn fuzz_index_objects() {
    let corpus = segments().into_iter().map(|s| s.index.to_vec()).collect();
    run("index", corpus, kafscale_segstore::fuzzing::index);
}
