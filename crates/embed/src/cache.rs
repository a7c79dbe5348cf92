//! [`CachedEmbedder`]: remembers vectors by text so that re-indexing embeds only what changed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use precedent_core::{BoxError, Embedder};

use crate::error::{Error, Result};

type Key = [u8; 32];

/// Wraps an [`Embedder`] with a map from text (its blake3 hash) to vector; texts seen before are
/// not embedded again. Output order and content are exactly the wrapped embedder's.
///
/// The map lives in memory and grows with every new text; [`save`](Self::save) and
/// [`load`](Self::load) keep it across runs in a small binary file, tied to the wrapped
/// embedder's model id and dimension.
///
/// # File format (version 1, little-endian)
///
/// | bytes | content |
/// | --- | --- |
/// | 8 | magic `PRCDEMB\0` |
/// | 4 | format version, `1` |
/// | 4 | dimension `d` |
/// | 4 + n | model id: length `n`, then UTF-8 |
/// | 8 | entry count `c` |
/// | c × (32 + 4d) | entries sorted by key: blake3 of the text, then `d` f32 values |
/// | 32 | blake3 of everything above |
pub struct CachedEmbedder<E> {
    inner: E,
    entries: RwLock<HashMap<Key, Vec<f32>>>,
}

const MAGIC: &[u8; 8] = b"PRCDEMB\0";
const VERSION: u32 = 1;

impl<E: Embedder> CachedEmbedder<E> {
    /// An empty cache around `inner`.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// A cache around `inner` filled from `path`; empty when `path` does not exist yet.
    ///
    /// Fails with [`Error::CacheModelMismatch`] when the file was written for another model id
    /// or dimension (the caller may then start afresh with [`new`](Self::new)), with
    /// [`Error::CacheFormat`] when it is truncated, corrupt or of an unknown version.
    pub fn load(inner: E, path: &Path) -> Result<Self> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(inner)),
            Err(e) => return Err(Error::io(path, e)),
        };
        let entries = decode(path, &bytes, inner.model_id(), inner.dimension())?;
        Ok(Self {
            inner,
            entries: RwLock::new(entries),
        })
    }

    /// Writes every cached vector to `path`: to a temporary file in the same directory first,
    /// then renamed over `path`, so a reader never sees a half-written cache.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            encode(self.inner.model_id(), self.inner.dimension(), &entries)
        };
        write_atomically(path, &bytes)
    }

    /// Number of cached vectors.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wrapped embedder.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Unwraps the embedder, dropping the cache.
    pub fn into_inner(self) -> E {
        self.inner
    }

    fn embed_cached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        let keys: Vec<Key> = texts
            .iter()
            .map(|t| *blake3::hash(t.as_bytes()).as_bytes())
            .collect();
        // Index of the first occurrence of each text not cached yet.
        let missing: Vec<usize> = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            let mut queued = HashSet::new();
            (0..texts.len())
                .filter(|&i| !entries.contains_key(&keys[i]) && queued.insert(keys[i]))
                .collect()
        };
        let fresh = if missing.is_empty() {
            Vec::new()
        } else {
            let batch: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let vectors = self.inner.embed(&batch)?;
            self.check_output(batch.len(), &vectors)?;
            vectors
        };
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        for (&i, v) in missing.iter().zip(fresh) {
            entries.insert(keys[i], v);
        }
        // Entries are never removed, so every key is present now.
        Ok(keys.iter().map(|k| entries[k].clone()).collect())
    }

    fn check_output(&self, asked: usize, vectors: &[Vec<f32>]) -> Result<()> {
        let contract = |reason: String| Error::InnerContract {
            model_id: self.inner.model_id().to_owned(),
            reason,
        };
        if vectors.len() != asked {
            return Err(contract(format!(
                "{} vectors for {asked} texts",
                vectors.len()
            )));
        }
        let dim = self.inner.dimension();
        if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            return Err(contract(format!(
                "a vector of {} dimensions instead of {dim}",
                v.len()
            )));
        }
        Ok(())
    }
}

impl<E: Embedder> Embedder for CachedEmbedder<E> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.embed_cached(texts)
    }
}

impl<E: fmt::Debug> fmt::Debug for CachedEmbedder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("CachedEmbedder")
            .field("inner", &self.inner)
            .field("entries", &len)
            .finish()
    }
}

fn encode(model_id: &str, dim: usize, entries: &HashMap<Key, Vec<f32>>) -> Vec<u8> {
    let mut sorted: Vec<(&Key, &Vec<f32>)> = entries.iter().collect();
    sorted.sort_unstable_by_key(|(k, _)| *k);
    let mut out = Vec::with_capacity(64 + model_id.len() + entries.len() * (32 + 4 * dim));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(model_id.len() as u32).to_le_bytes());
    out.extend_from_slice(model_id.as_bytes());
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    for (key, vector) in sorted {
        out.extend_from_slice(key);
        for x in vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

fn decode(path: &Path, bytes: &[u8], model_id: &str, dim: usize) -> Result<HashMap<Key, Vec<f32>>> {
    let bad = |reason: &str| Error::CacheFormat {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not an embedding cache (bad magic)"));
    }
    let mut r = Reader {
        bytes: &bytes[MAGIC.len()..],
    };
    let version = r.u32().ok_or_else(|| bad("truncated header"))?;
    if version != VERSION {
        return Err(bad(&format!(
            "format version {version}, this build reads version {VERSION}"
        )));
    }
    let (body, checksum) = bytes.split_at(bytes.len().saturating_sub(32).max(MAGIC.len() + 4));
    if checksum.len() != 32 || blake3::hash(body).as_bytes() != checksum {
        return Err(bad("checksum mismatch (truncated or corrupt)"));
    }
    let mut r = Reader {
        bytes: &body[MAGIC.len() + 4..],
    };
    let file_dim = r.u32().ok_or_else(|| bad("truncated header"))? as usize;
    let id_len = r.u32().ok_or_else(|| bad("truncated header"))? as usize;
    let file_id = r
        .take(id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| bad("bad model id"))?;
    if file_id != model_id || file_dim != dim {
        return Err(Error::CacheModelMismatch {
            path: path.to_owned(),
            found: file_id.to_owned(),
            found_dim: file_dim,
            expected: model_id.to_owned(),
            expected_dim: dim,
        });
    }
    let count = r.u64().ok_or_else(|| bad("truncated header"))?;
    let entry_len = 32 + 4 * dim;
    if (r.bytes.len() as u64) != count.saturating_mul(entry_len as u64) {
        return Err(bad("entry count does not match the file size"));
    }
    let mut entries = HashMap::with_capacity(r.bytes.len() / entry_len);
    for entry in r.bytes.chunks_exact(entry_len) {
        let (key, values) = entry.split_at(32);
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        let v = values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        entries.insert(k, v);
    }
    Ok(entries)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::ErrorKind::InvalidInput.into()))?;
    let tmp: PathBuf = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut entries = HashMap::new();
        entries.insert([1u8; 32], vec![0.5f32, -0.25, 1.0]);
        entries.insert([7u8; 32], vec![f32::MIN_POSITIVE, 3.0, -0.0]);
        let bytes = encode("m@123", 3, &entries);
        assert_eq!(&bytes[..8], MAGIC);
        let back = decode(Path::new("c"), &bytes, "m@123", 3).unwrap();
        assert_eq!(back, entries);
        // Deterministic: same map, same bytes.
        assert_eq!(encode("m@123", 3, &back), bytes);
    }

    #[test]
    fn empty_cache_round_trip() {
        let bytes = encode("m", 4, &HashMap::new());
        assert!(decode(Path::new("c"), &bytes, "m", 4).unwrap().is_empty());
    }

    #[test]
    fn corrupt_files_are_rejected() {
        let mut entries = HashMap::new();
        entries.insert([2u8; 32], vec![1.0f32; 4]);
        let bytes = encode("m", 4, &entries);
        let check = |bytes: &[u8], want: &str| match decode(Path::new("c"), bytes, "m", 4) {
            Err(Error::CacheFormat { reason, .. }) => assert!(reason.contains(want), "{reason}"),
            other => panic!("{other:?}"),
        };
        check(b"", "magic");
        check(b"garbage!garbage!", "magic");
        check(MAGIC, "truncated header");
        check(&bytes[..bytes.len() - 1], "checksum");
        check(&bytes[..20], "checksum");
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        check(&flipped, "checksum");
        let mut v2 = bytes.clone();
        v2[8] = 2;
        check(&v2, "version 2");
    }

    #[test]
    fn other_model_is_a_mismatch() {
        let bytes = encode("a@1", 4, &HashMap::new());
        assert!(matches!(
            decode(Path::new("c"), &bytes, "b@2", 4),
            Err(Error::CacheModelMismatch { .. })
        ));
        assert!(matches!(
            decode(Path::new("c"), &bytes, "a@1", 8),
            Err(Error::CacheModelMismatch { .. })
        ));
    }
}
