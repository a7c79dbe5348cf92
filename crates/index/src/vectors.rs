//! Step vectors: a flat f32 file (the source of truth, exact search, reuse of unchanged
//! vectors) and an approximate nearest-neighbour graph over it.
//!
//! # Why usearch
//!
//! The ANN graph is [usearch](https://github.com/unum-cloud/USearch)'s HNSW, chosen over
//! `hnsw_rs` because it (1) applies a filter predicate *inside* the graph walk
//! (`filtered_search`), so a filtered query still returns `k` matching neighbours instead of
//! dropping results afterwards, (2) saves to and loads from one file, (3) supports removing and
//! adding keys, so an incremental update does not rebuild the graph, and (4) stores vectors as
//! f16, which halves the graph's memory; recall lost to f16 is recovered by re-ranking the
//! candidates exactly with the f32 vectors of the flat file. `hnsw_rs` was not tried: usearch
//! built here (C++ via `cxx`, numkong SIMD kernels disabled to keep the build small) and its
//! search latency fit the budget on the first measurement.
//!
//! usearch's default `numkong` feature is on: its SIMD f16 distance kernels made the graph walk
//! 2.4x faster than the portable ones (vector search p50 3.3 -> 1.4 ms at 100k steps).
//!
//! Measured with `examples/bench_search.rs` at 100k steps (the 7,214 real steps of the shared
//! corpora plus synthetic steps whose vectors are real vectors + N(0, 0.02) noise), on an idle
//! 2-core machine: M = 32, efConstruction = 256, efSearch = 256 give recall@10 0.987 against
//! exact search at 1.0 ms p50 / 1.5 ms p99 (exact scan: 17 ms); efSearch 512 gives 0.995 at
//! 1.7 ms. M = 16, efConstruction = 128 topped out at 0.979 (efSearch 512).
//!
//! Small indexes, and filters that leave few candidates, use exact search over the flat file:
//! it is exact and, below a few thousand vectors, faster than walking a graph.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"PRVEC001";
const HEADER: usize = 8 + 4 + 4 + 8;

/// Concurrent ANN searches allowed; usearch needs a reserved context per searching thread.
const ANN_THREADS: usize = 64;

/// Vectors of all steps of one data directory, in slot order.
#[derive(Debug)]
pub(crate) struct VectorStore {
    dim: usize,
    keys: Vec<u64>,
    data: Vec<f32>,
    slot_of: Arc<HashMap<u64, u32>>,
}

impl VectorStore {
    pub fn new(dim: usize, keys: Vec<u64>, data: Vec<f32>) -> Result<VectorStore> {
        if data.len() != keys.len() * dim {
            return Err(Error::Corrupt(format!(
                "{} vector values for {} keys of dimension {dim}",
                data.len(),
                keys.len()
            )));
        }
        let mut slot_of = HashMap::with_capacity(keys.len());
        for (slot, key) in keys.iter().enumerate() {
            if slot_of.insert(*key, slot as u32).is_some() {
                return Err(Error::Corrupt(format!(
                    "vector key {key:016x} appears twice"
                )));
            }
        }
        Ok(VectorStore {
            dim,
            keys,
            data,
            slot_of: Arc::new(slot_of),
        })
    }

    /// The keys and the flat vector data, in slot order.
    pub fn into_parts(self) -> (Vec<u64>, Vec<f32>) {
        (self.keys, self.data)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    pub fn slot(&self, key: u64) -> Option<u32> {
        self.slot_of.get(&key).copied()
    }

    /// Key to slot, shareable with closures that must be `'static`.
    pub fn slot_map(&self) -> Arc<HashMap<u64, u32>> {
        self.slot_of.clone()
    }

    pub fn vector(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Writes the store to `path` and fsyncs it; returns (bytes, blake3 hex).
    pub fn write(&self, path: &Path) -> Result<(u64, String)> {
        let file = File::create(path).map_err(Error::io("cannot create vector file", path))?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let io = |r: std::io::Result<()>| r.map_err(Error::io("cannot write vector file", path));
        io(out.write_all(MAGIC))?;
        io(out.write_all(&(self.dim as u32).to_le_bytes()))?;
        io(out.write_all(&0u32.to_le_bytes()))?;
        io(out.write_all(&(self.keys.len() as u64).to_le_bytes()))?;
        for key in &self.keys {
            io(out.write_all(&key.to_le_bytes()))?;
        }
        for chunk in self.data.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            io(out.write_all(&bytes))?;
        }
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = out;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io("cannot write vector file", path)(e.into_error()))?;
        file.sync_all()
            .map_err(Error::io("cannot sync vector file", path))?;
        Ok((bytes, hasher.finalize().to_hex().to_string()))
    }

    /// Reads a store written by [`VectorStore::write`], checking size and checksum.
    pub fn read(
        path: &Path,
        dim: usize,
        expected_bytes: u64,
        expected_blake3: &str,
    ) -> Result<VectorStore> {
        let bytes = fs::read(path).map_err(Error::io("cannot read vector file", path))?;
        if bytes.len() as u64 != expected_bytes
            || blake3::hash(&bytes).to_hex().as_str() != expected_blake3
        {
            return Err(Error::Corrupt(format!(
                "{} does not match the manifest",
                path.display()
            )));
        }
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(Error::Corrupt(format!(
                "{} is not a vector file",
                path.display()
            )));
        }
        let file_dim = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()) as usize;
        let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default()) as usize;
        if file_dim != dim || bytes.len() != HEADER + count * 8 + count * dim * 4 {
            return Err(Error::Corrupt(format!(
                "{} has an unexpected layout",
                path.display()
            )));
        }
        let keys_end = HEADER + count * 8;
        let keys = bytes[HEADER..keys_end]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        // The file is little-endian f32: on a little-endian host with the bytes aligned (they
        // are: allocations are, and the data starts at a multiple of 8) a plain copy.
        let raw = &bytes[keys_end..];
        let data = match bytemuck::try_cast_slice::<u8, f32>(raw) {
            Ok(values) if cfg!(target_endian = "little") => values.to_vec(),
            _ => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        };
        VectorStore::new(dim, keys, data)
    }

    /// Exact top-`n` by inner product among slots accepted by `allow`, best first.
    pub fn exact_search(
        &self,
        query: &[f32],
        n: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(u32, f32)> {
        self.exact_search_in(query, n, 0..self.keys.len() as u32, allow)
    }

    /// [`exact_search`](Self::exact_search) over the slots of `range` only.
    pub fn exact_search_in(
        &self,
        query: &[f32],
        n: usize,
        range: std::ops::Range<u32>,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(u32, f32)> {
        let mut scored: Vec<(u32, f32)> = Vec::new();
        for slot in range {
            if allow.is_some_and(|allow| !allow(slot)) {
                continue;
            }
            scored.push((slot, dot(query, self.vector(slot))));
        }
        self.top_n(&mut scored, n);
        scored
    }

    /// Keeps the `n` best of `scored` (slot, score), sorted: highest score first, equal
    /// scores by key, so that the order does not depend on where a vector sits (equal texts
    /// have equal vectors, and an updated index holds its segments in another order than a
    /// fresh one).
    pub fn top_n(&self, scored: &mut Vec<(u32, f32)>, n: usize) {
        let key = |slot: u32| self.keys[slot as usize];
        let cmp = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.total_cmp(&a.1).then_with(|| key(a.0).cmp(&key(b.0)))
        };
        if scored.len() > n && n > 0 {
            scored.select_nth_unstable_by(n - 1, cmp);
        }
        scored.truncate(n);
        scored.sort_by(cmp);
    }
}

/// A segment this small or smaller is always merged into the next publish's segment.
const MERGE_FLOOR: u64 = 64;
/// A younger segment is merged into the new one while it holds at most this many times the
/// vectors the new one has gathered so far.
const MERGE_RATIO: u64 = 4;

/// Which segments (indexes into `segments`, given oldest first as (vectors in the file, live
/// vectors after this publish)) a publish folds into its new segment of `fresh` vectors.
///
/// The logarithmic method, as in LSM trees and Lucene's log merge policy: going from the
/// youngest segment back, each one joins while it is at most [`MERGE_RATIO`] times what the
/// new segment holds so far (at least [`MERGE_FLOOR`]). Segment sizes then grow geometrically
/// towards the oldest, so there are O(log n) of them and a vector is rewritten O(log n) times
/// over its life; a publish of a few steps writes at most a few thousand vectors, and a large
/// merge comes once per that many changed steps. A segment more than half dead is merged
/// wherever it is, and an empty one is dropped (it is in neither the plan nor the result).
pub(crate) fn merge_plan(segments: &[(u64, u64)], fresh: u64) -> Vec<usize> {
    let mut plan: Vec<usize> = segments
        .iter()
        .enumerate()
        .filter(|(_, (count, live))| *live > 0 && live * 2 < *count)
        .map(|(i, _)| i)
        .collect();
    let mut gathered = fresh + plan.iter().map(|&i| segments[i].1).sum::<u64>();
    for (i, &(_, live)) in segments.iter().enumerate().rev() {
        if live == 0 || plan.contains(&i) {
            continue;
        }
        if live > MERGE_RATIO * gathered.max(MERGE_FLOOR) {
            break;
        }
        plan.push(i);
        gathered += live;
    }
    plan.sort_unstable();
    plan
}

/// A segment file opened for reading parts of it: its keys, and single vectors by slot. The
/// writer uses it to publish without reading whole segments (the reader checks every byte
/// against the manifest's blake3 when it loads them).
pub(crate) struct SegmentFile {
    file: File,
    path: std::path::PathBuf,
    dim: usize,
    keys: Vec<u64>,
}

impl SegmentFile {
    /// Opens `path` and reads its header and keys, checking them against the manifest's size.
    pub fn open(path: &Path, dim: usize, expected_bytes: u64) -> Result<SegmentFile> {
        use std::io::Read as _;
        let corrupt = |what: &str| Error::Corrupt(format!("{} {what}", path.display()));
        let mut file = File::open(path).map_err(Error::io("cannot open vector file", path))?;
        let len = file
            .metadata()
            .map_err(Error::io("cannot read vector file", path))?
            .len();
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header)
            .map_err(Error::io("cannot read vector file", path))?;
        let file_dim = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default()) as usize;
        let count = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default()) as usize;
        if &header[..8] != MAGIC
            || file_dim != dim
            || len != expected_bytes
            || len != (HEADER + count * 8 + count * dim * 4) as u64
        {
            return Err(corrupt("does not match the manifest"));
        }
        let mut raw = vec![0u8; count * 8];
        file.read_exact(&mut raw)
            .map_err(Error::io("cannot read vector file", path))?;
        let keys = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(SegmentFile {
            file,
            path: path.to_owned(),
            dim,
            keys,
        })
    }

    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Appends the vector in `slot` to `out`.
    pub fn push_vector(&self, slot: u32, out: &mut Vec<f32>) -> Result<()> {
        let start = out.len();
        out.resize(start + self.dim, 0.0);
        self.read_into(slot, &mut out[start..])
    }

    fn read_into(&self, slot: u32, out: &mut [f32]) -> Result<()> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let offset = HEADER + self.keys.len() * 8 + slot as usize * self.dim * 4;
        let mut raw = vec![0u8; self.dim * 4];
        let io = Error::io("cannot read vector file", &self.path);
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset as u64))
            .and_then(|_| file.read_exact(&mut raw))
            .map_err(io)?;
        for (v, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *v = f32::from_le_bytes(c.try_into().unwrap_or_default());
        }
        Ok(())
    }
}

/// Keeps the `n` best (highest score, then lowest slot) of `scored`, sorted.
pub(crate) fn top_n<T: Ord>(scored: &mut Vec<(T, f32)>, n: usize) {
    let cmp = |a: &(T, f32), b: &(T, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > n && n > 0 {
        scored.select_nth_unstable_by(n - 1, cmp);
        scored.truncate(n);
    }
    scored.truncate(n);
    scored.sort_by(cmp);
}

/// Inner product; with unit vectors, the cosine similarity.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without -ffast-math.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The HNSW graph over a [`VectorStore`], keyed by vector key.
pub(crate) struct Ann {
    index: usearch::Index,
    permits: Mutex<usize>,
    freed: Condvar,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("size", &self.index.size())
            .finish()
    }
}

/// Search-time beam width (efSearch); the effective width is at least the number of candidates
/// asked for. Measured in `examples/bench_search.rs`.
const EXPANSION_SEARCH: usize = 256;

/// Graph parameters: M = 32 neighbours, efConstruction = 256. Measured in
/// `examples/bench_search.rs`: with M = 16, efConstruction = 128 recall@10 stayed at 0.979 even
/// with efSearch 512.
fn options(dim: usize) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F16,
        connectivity: 32,
        expansion_add: 256,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

impl Ann {
    fn wrap(index: usearch::Index) -> Result<Ann> {
        index.change_expansion_search(EXPANSION_SEARCH);
        index
            .reserve_capacity_and_threads(index.size().max(1), ANN_THREADS)
            .map_err(Error::ann)?;
        Ok(Ann {
            index,
            permits: Mutex::new(ANN_THREADS),
            freed: Condvar::new(),
        })
    }

    /// Builds a graph over every vector of `store`, with `threads` threads.
    pub fn build(store: &VectorStore, threads: usize) -> Result<Ann> {
        let index = usearch::Index::new(&options(store.dim())).map_err(Error::ann)?;
        let threads = threads.max(1);
        index
            .reserve_capacity_and_threads(store.len().max(1), threads)
            .map_err(Error::ann)?;
        add_all(&index, store, (0..store.len() as u32).collect(), threads)?;
        Ann::wrap(index)
    }

    /// Loads a saved graph, removes `removed` keys and adds the `added` slots of `store`.
    pub fn update(
        path: &Path,
        store: &VectorStore,
        removed: &[u64],
        added: Vec<u32>,
        threads: usize,
    ) -> Result<Ann> {
        let index = load_index(path, store.dim())?;
        for key in removed {
            index.remove(*key).map_err(Error::ann)?;
        }
        let threads = threads.max(1);
        index
            .reserve_capacity_and_threads(index.size() + added.len() + 1, threads)
            .map_err(Error::ann)?;
        add_all(&index, store, added, threads)?;
        Ann::wrap(index)
    }

    /// Loads a saved graph for searching.
    pub fn load(path: &Path, dim: usize) -> Result<Ann> {
        Ann::wrap(load_index(path, dim)?)
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Saves the graph and fsyncs the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let name = path
            .to_str()
            .ok_or_else(|| Error::Ann(format!("non-UTF-8 path {}", path.display())))?;
        self.index.save(name).map_err(Error::ann)?;
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(Error::io("cannot sync vector graph", path))
    }

    /// Approximate top-`n` keys by inner product (similarity = 1 - distance), restricted to
    /// keys accepted by `allow` during the graph walk.
    pub fn search(
        &self,
        query: &[f32],
        n: usize,
        allow: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>> {
        let _permit = self.acquire();
        let matches = match allow {
            Some(allow) => self.index.filtered_search(query, n, allow),
            None => self.index.search(query, n),
        }
        .map_err(Error::ann)?;
        Ok(matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .map(|(k, d)| (k, 1.0 - d))
            .collect())
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Ann);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.permits.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn load_index(path: &Path, dim: usize) -> Result<usearch::Index> {
    let name = path
        .to_str()
        .ok_or_else(|| Error::Ann(format!("non-UTF-8 path {}", path.display())))?;
    let index = usearch::Index::new(&options(dim)).map_err(Error::ann)?;
    index.load(name).map_err(Error::ann)?;
    if index.dimensions() != dim {
        return Err(Error::Corrupt(format!(
            "{} has dimension {}, expected {dim}",
            path.display(),
            index.dimensions()
        )));
    }
    Ok(index)
}

fn add_all(
    index: &usearch::Index,
    store: &VectorStore,
    slots: Vec<u32>,
    threads: usize,
) -> Result<()> {
    let chunk = slots.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<()> {
                    for &slot in part {
                        index
                            .add(store.keys()[slot as usize], store.vector(slot))
                            .map_err(Error::ann)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Ann("indexing thread panicked".into())))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let norm = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    fn store(n: u64, dim: usize) -> VectorStore {
        let keys: Vec<u64> = (0..n).map(|i| 1000 + i).collect();
        let data = (0..n).flat_map(|i| unit(i, dim)).collect();
        VectorStore::new(dim, keys, data).unwrap()
    }

    #[test]
    fn merge_plan_keeps_segment_sizes_geometric() {
        // A large base and a small change: the base stays, the change is a segment of its own.
        assert_eq!(merge_plan(&[(100_000, 100_000)], 5), Vec::<usize>::new());
        // Small young segments are folded in; the base is not.
        assert_eq!(
            merge_plan(&[(100_000, 99_990), (5, 5), (10, 8)], 5),
            vec![1, 2]
        );
        // Empty segments are dropped, half-dead ones merged wherever they are.
        assert_eq!(merge_plan(&[(100_000, 40_000), (5_000, 0)], 5), vec![0]);
        assert_eq!(merge_plan(&[(5_000, 0)], 5), Vec::<usize>::new());
        // Simulated: 20,000 publishes of 5 new steps each over a base of 100,000 keep at most
        // 6 segments and rewrite about 150 vectors per publish on average (the youngest
        // small segments, and once in a while a larger merge).
        let mut segments: Vec<(u64, u64)> = vec![(100_000, 100_000)];
        let mut rewritten = 0u64;
        for _ in 0..20_000 {
            let plan = merge_plan(&segments, 5);
            let merged: u64 = plan.iter().map(|&i| segments[i].1).sum();
            rewritten += merged + 5;
            let mut next: Vec<(u64, u64)> = segments
                .iter()
                .enumerate()
                .filter(|(i, s)| s.1 > 0 && !plan.contains(i))
                .map(|(_, s)| *s)
                .collect();
            next.push((merged + 5, merged + 5));
            segments = next;
            assert!(segments.len() <= 8, "{segments:?}");
        }
        let per_publish = rewritten / 20_000;
        assert!(
            per_publish < 200,
            "{per_publish} vectors rewritten per publish"
        );
    }

    #[test]
    fn flat_file_round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let s = store(50, 12);
        let (bytes, hash) = s.write(&path).unwrap();
        let back = VectorStore::read(&path, 12, bytes, &hash).unwrap();
        assert_eq!(back.keys(), s.keys());
        assert_eq!(back.vector(7), s.vector(7));
        let mut raw = fs::read(&path).unwrap();
        raw[100] ^= 1;
        fs::write(&path, raw).unwrap();
        assert!(matches!(
            VectorStore::read(&path, 12, bytes, &hash),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn exact_search_ranks_by_inner_product_and_filters() {
        let s = store(200, 16);
        let q = s.vector(42).to_vec();
        let hits = s.exact_search(&q, 5, None);
        assert_eq!(hits[0].0, 42);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        let even = |slot: u32| slot.is_multiple_of(2);
        let hits = s.exact_search(&q, 5, Some(&even));
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|(slot, _)| slot.is_multiple_of(2)));
    }

    #[test]
    fn ann_finds_neighbours_filters_inside_and_survives_save_update() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(500, 32);
        let ann = Ann::build(&s, 2).unwrap();
        let q = s.vector(10).to_vec();
        let hits = ann.search(&q, 10, None).unwrap();
        assert_eq!(hits[0].0, s.keys()[10]);
        // A selective filter still yields a full page of matching keys.
        let allow = |key: u64| key.is_multiple_of(7);
        let hits = ann.search(&q, 10, Some(&allow)).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(k, _)| k.is_multiple_of(7)));
        let path = dir.path().join("g.usearch");
        ann.save(&path).unwrap();
        let updated = Ann::update(&path, &s, &[s.keys()[10]], vec![], 1).unwrap();
        assert_eq!(updated.len(), 499);
        let hits = updated.search(&q, 10, None).unwrap();
        assert!(hits.iter().all(|(k, _)| *k != s.keys()[10]));
    }
}
