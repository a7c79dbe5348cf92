//! [`BertEmbedder`]: a sentence-transformers BERT model directory turned into an [`Embedder`].

use std::cmp::Reverse;
use std::fmt;
use std::path::{Path, PathBuf};

use precedent_core::{BoxError, Embedder};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bf16::Kernel as Bf16Kernel;
use crate::config::{self, BertConfig, Pooling};
use crate::error::{Error, Result};
use crate::native::{NativeBert, Seq};
use crate::reference::CandleBert;
use crate::weights::Weights;

/// Which implementation runs the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// This crate's encoder: packed sequences without padding, per-core row blocks kept in
    /// cache, fused bias and residual additions, vectorised element-wise kernels. About three
    /// times the candle backend's throughput (`examples/bench_embed.rs`).
    #[default]
    Native,
    /// candle-transformers' `BertModel` on padded batches with attention masks. The reference
    /// the native encoder is tested against.
    Candle,
}

/// Number format of the encoder's linear layers (the products that hold nearly all its work).
///
/// bf16 vectors are not the f32 ones (cosine about 0.9999 to them, not 1), so the precision is
/// part of the [model id](precedent_core::Embedder::model_id): `name@hash` for f32,
/// `name@hash+bf16` for bf16 (either bf16 kernel), and an index built with one is rebuilt or
/// refused when opened with the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// The fastest precision whose accuracy holds on this CPU: bf16 on AMX where the CPU and
    /// the OS have it, else f32. AVX-512 BF16 without AMX is not picked: on two cores it did
    /// not beat the f32 kernels by enough to be worth the different vectors.
    Auto,
    /// f32 everywhere: the reference, and the same on every CPU.
    #[default]
    F32,
    /// Weights rounded to bf16 at load, activations per product, sums in f32, on the fastest
    /// bf16 kernel of this CPU (AMX tiles, else AVX-512 BF16); an error where it has neither.
    /// Attention, softmax, layer norms and activations stay f32.
    Bf16,
    /// As [`Bf16`](Self::Bf16) on the AVX-512 BF16 kernel even where AMX is present: for
    /// comparing the kernels. Same model id as `Bf16`.
    Bf16Avx512,
}

impl Precision {
    /// Parses `auto`, `f32`, `bf16` or `bf16-avx512`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "f32" => Some(Self::F32),
            "bf16" => Some(Self::Bf16),
            "bf16-avx512" => Some(Self::Bf16Avx512),
            _ => None,
        }
    }

    /// The kernel this precision runs the linear layers on here: `Ok(None)` for f32, an error
    /// when the CPU cannot run it.
    fn kernel(self) -> Result<Option<Bf16Kernel>> {
        let available = Bf16Kernel::available();
        match self {
            Precision::F32 => Ok(None),
            Precision::Auto => Ok(available
                .contains(&Bf16Kernel::Amx)
                .then_some(Bf16Kernel::Amx)),
            Precision::Bf16 => Bf16Kernel::detect().map(Some).ok_or_else(|| {
                Error::InvalidOption(
                    "precision bf16 needs a CPU with AMX-BF16 or AVX-512 BF16; use f32 or auto"
                        .into(),
                )
            }),
            Precision::Bf16Avx512 => available
                .contains(&Bf16Kernel::Avx512)
                .then_some(Some(Bf16Kernel::Avx512))
                .ok_or_else(|| {
                    Error::InvalidOption(
                        "precision bf16-avx512 needs a CPU with AVX-512 BF16".into(),
                    )
                }),
        }
    }
}

/// How a [`BertEmbedder`] runs. `Default` suits a two-core machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderOptions {
    /// Most texts per forward pass. Texts are sorted by token count and cut into batches of
    /// this many, so each batch holds texts of similar length.
    pub batch_size: usize,
    /// Token limit per text (special tokens included) instead of the model's
    /// `sentence_bert_config.json`; never above the model's `max_position_embeddings`.
    pub max_seq_len: Option<usize>,
    /// Worker threads; `None` means `candle_core::utils::get_num_threads()`, which honours
    /// `RAYON_NUM_THREADS` and otherwise counts physical cores.
    pub threads: Option<usize>,
    /// The transformer implementation.
    pub backend: Backend,
    /// Number format of the linear layers (native backend only; the candle backend is f32).
    pub precision: Precision,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            max_seq_len: None,
            threads: None,
            backend: Backend::default(),
            precision: Precision::default(),
        }
    }
}

/// Texts per forward pass. The native encoder does not pad, so this bounds memory (about
/// 8 KiB of activations per token) and sets how many rows there are to share between cores:
/// 16 texts of ~140 tokens make six 370-row blocks. On two cores (`examples/bench_embed.rs
/// --sweep`, ~100-word texts) 8 and 16 measured 275 GFLOP/s, 32 268 and 64 263.
const DEFAULT_BATCH_SIZE: usize = 16;

enum Engine {
    Native(Box<NativeBert>),
    Candle(Box<CandleBert>),
}

/// A sentence-transformers BERT-family model (all-MiniLM-L6-v2, bge, e5, gte, ...) running
/// in-process on the CPU.
///
/// Loaded from a model directory with `config.json`, `tokenizer.json`, `model.safetensors`,
/// `1_Pooling/config.json` and optionally `sentence_bert_config.json`. Texts longer than the
/// model's limit are truncated; every output vector has unit length.
pub struct BertEmbedder {
    model_id: String,
    dir: PathBuf,
    config: BertConfig,
    pooling: Pooling,
    max_seq_len: usize,
    batch_size: usize,
    threads: usize,
    backend: Backend,
    kernel: Option<Bf16Kernel>,
    tokenizer: Tokenizer,
    engine: Engine,
    pool: rayon::ThreadPool,
}

impl fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("model_id", &self.model_id)
            .field("dir", &self.dir)
            .field("dimension", &self.config.hidden_size)
            .field("pooling", &self.pooling)
            .field("max_seq_len", &self.max_seq_len)
            .field("batch_size", &self.batch_size)
            .field("threads", &self.threads)
            .field("backend", &self.backend)
            .field("kernels", &self.cpu_kernels())
            .finish_non_exhaustive()
    }
}

impl BertEmbedder {
    /// Loads the model in `dir`.
    ///
    /// Every file is checked before use: a missing directory or file, a `config.json` that is not
    /// BERT or lacks a field, an unsupported pooling mode, a tokenizer that does not parse,
    /// weights whose shapes disagree with the configuration each give their own [`Error`]
    /// variant naming the file.
    pub fn load(dir: &Path, options: EmbedderOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(Error::InvalidOption("batch_size must be at least 1".into()));
        }
        let threads = match options.threads {
            Some(0) => return Err(Error::InvalidOption("threads must be at least 1".into())),
            Some(n) => n,
            None => candle_core::utils::get_num_threads().max(1),
        };
        let kernel = match (options.backend, options.precision) {
            (Backend::Candle, Precision::F32 | Precision::Auto) => None,
            (Backend::Candle, _) => {
                return Err(Error::InvalidOption(
                    "the candle backend runs in f32 only".into(),
                ));
            }
            (Backend::Native, precision) => precision.kernel()?,
        };
        config::check_dir(dir)?;

        let config_path = dir.join(config::CONFIG);
        let config_bytes = config::read(&config_path)?;
        let config = config::parse_bert_config(&config_path, &config_bytes)?;

        let pooling_path = dir.join(config::POOLING);
        let pooling_bytes = config::read(&pooling_path)?;
        let pooling = config::parse_pooling(&pooling_path, &pooling_bytes, config.hidden_size)?;

        let sbert = config::read_sbert_max_seq_len(dir)?;
        let max_seq_len = options
            .max_seq_len
            .or(sbert.as_ref().map(|(_, n)| *n))
            .unwrap_or(config::DEFAULT_MAX_SEQ_LEN)
            .min(config.max_position_embeddings);

        let tokenizer_path = dir.join(config::TOKENIZER);
        let tokenizer_bytes = config::read(&tokenizer_path)?;
        let tokenizer = load_tokenizer(&tokenizer_path, &tokenizer_bytes, &config, max_seq_len)?;

        let weights_path = dir.join(config::WEIGHTS);
        let weights_bytes = config::map(&weights_path)?;
        let mut model_id = model_id(
            &config_bytes,
            &[
                &config_bytes,
                &pooling_bytes,
                &tokenizer_bytes,
                &weights_bytes,
                max_seq_len.to_string().as_bytes(),
            ],
        );
        if kernel.is_some() {
            model_id.push_str(BF16_SUFFIX);
        }
        let weights = Weights::parse(&weights_path, &weights_bytes, &config)?;
        let engine = match options.backend {
            Backend::Native => {
                Engine::Native(Box::new(NativeBert::load(&weights, &config, kernel)?))
            }
            Backend::Candle => Engine::Candle(Box::new(CandleBert::load(
                weights.into_tensors()?,
                &config,
            )?)),
        };
        drop(weights_bytes);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("precedent-embed-{i}"))
            .build()?;
        Ok(Self {
            model_id,
            dir: dir.to_owned(),
            config,
            pooling,
            max_seq_len,
            batch_size: options.batch_size,
            threads,
            backend: options.backend,
            kernel,
            tokenizer,
            engine,
            pool,
        })
    }

    /// Embeds `texts`: one unit vector per text, in input order. Like
    /// [`Embedder::embed`] with this crate's error type.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.install(|| {
            let encodings = self.tokenize(texts)?;
            let seqs = encodings
                .iter()
                .map(|e| self.seq(e))
                .collect::<Result<Vec<_>>>()?;
            // Longest first, so that each batch holds texts of similar length (the candle
            // backend pads to the longest in its batch) and the big batches start early.
            let mut order: Vec<usize> = (0..seqs.len()).collect();
            order.sort_by_key(|&i| Reverse(seqs[i].ids.len()));
            let mut out = vec![Vec::new(); texts.len()];
            for chunk in order.chunks(self.batch_size) {
                let batch: Vec<Seq<'_>> = chunk.iter().map(|&i| seqs[i]).collect();
                let vectors = match &self.engine {
                    Engine::Native(m) => m.embed(&batch, self.pooling, self.threads),
                    Engine::Candle(m) => m.embed(&batch, self.pooling)?,
                };
                for (&i, v) in chunk.iter().zip(vectors) {
                    out[i] = v;
                }
            }
            Ok(out)
        })
    }

    /// The last layer's hidden state of every token of `text` (special tokens included, after
    /// truncation), before pooling and normalisation. `[CLS]` pooling returns the first of
    /// these, normalised; mean pooling their normalised average.
    pub fn hidden_states(&self, text: &str) -> Result<Vec<Vec<f32>>> {
        self.pool.install(|| {
            let encodings = self.tokenize(&[text])?;
            let seq = self.seq(&encodings[0])?;
            let flat = match &self.engine {
                Engine::Native(m) => m.encode(&[seq], self.threads).to_vec(),
                Engine::Candle(m) => m.encode_one(seq)?,
            };
            Ok(flat
                .chunks_exact(self.config.hidden_size)
                .map(<[f32]>::to_vec)
                .collect())
        })
    }

    /// Number of tokens the model sees for each text: special tokens included, after
    /// truncation to [`max_seq_len`](Self::max_seq_len).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.pool.install(|| self.tokenize(texts))?;
        Ok(encodings.iter().map(|e| e.get_ids().len()).collect())
    }

    /// Floating-point operations of one forward pass over a text of `tokens` tokens: per layer
    /// `2·n·(4h² + 2h·f)` for the dense products and `4·n²·h` for attention, with `n` tokens,
    /// hidden size `h` and intermediate size `f`. Element-wise work is not counted.
    pub fn forward_flops(&self, tokens: usize) -> u64 {
        let (n, h, f) = (
            tokens as u64,
            self.config.hidden_size as u64,
            self.config.intermediate_size as u64,
        );
        self.config.num_hidden_layers as u64 * (2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h)
    }

    /// Pooling mode read from `1_Pooling/config.json`.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Token limit per text, special tokens included.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Most texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The transformer implementation in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The directory the model was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    /// Instruction set of the element-wise kernels (`"avx512"`, `"avx2+fma"` or `"baseline"`),
    /// followed by the bf16 kernel of the linear layers when there is one (`"avx512+amx-bf16"`,
    /// `"avx512+avx512-bf16"`).
    pub fn cpu_kernels(&self) -> String {
        match self.kernel {
            Some(k) => format!("{}+{}", crate::kernels::isa_name(), k.name()),
            None => crate::kernels::isa_name().to_owned(),
        }
    }

    /// The precision the linear layers run in: [`Precision::F32`] or [`Precision::Bf16`]
    /// (what [`Precision::Auto`] resolved to; `Bf16Avx512` reports as `Bf16`).
    pub fn precision(&self) -> Precision {
        if self.kernel.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// Names of the bf16 kernels this CPU can run, fastest first (`"amx-bf16"`,
    /// `"avx512-bf16"`); empty where [`Precision::Bf16`] is unavailable.
    pub fn bf16_kernels_available() -> Vec<&'static str> {
        Bf16Kernel::available().iter().map(|k| k.name()).collect()
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        self.tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(Error::Tokenize)
    }

    fn seq<'e>(&self, encoding: &'e tokenizers::Encoding) -> Result<Seq<'e>> {
        // The tokenizer truncates already; this keeps the position table safe whatever it does.
        let len = encoding.get_ids().len().min(self.max_seq_len);
        let ids = &encoding.get_ids()[..len];
        let type_ids = &encoding.get_type_ids()[..len];
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: self.config.vocab_size,
            });
        }
        if let Some(&id) = type_ids
            .iter()
            .find(|&&id| id as usize >= self.config.type_vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: self.config.type_vocab_size,
            });
        }
        Ok(Seq { ids, type_ids })
    }
}

impl Embedder for BertEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.config.hidden_size
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(self.embed_texts(texts)?)
    }
}

fn load_tokenizer(
    path: &Path,
    bytes: &[u8],
    config: &BertConfig,
    max_seq_len: usize,
) -> Result<Tokenizer> {
    use tokenizers::PostProcessor;

    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|source| Error::Tokenizer {
        path: path.to_owned(),
        source,
    })?;
    let vocab = tokenizer.get_vocab_size(true);
    if vocab > config.vocab_size {
        return Err(Error::invalid_config(
            path,
            format!(
                "the tokenizer has {vocab} tokens but config.json's vocab_size is {}",
                config.vocab_size
            ),
        ));
    }
    let special = tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(false));
    if max_seq_len <= special {
        return Err(Error::InvalidOption(format!(
            "max_seq_len {max_seq_len} leaves no room for text next to {special} special tokens"
        )));
    }
    // The file's own truncation and padding (128, fixed, for all-MiniLM-L6-v2) are for
    // training; batches here are built without padding.
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_seq_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|source| Error::Tokenizer {
            path: path.to_owned(),
            source,
        })?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Appended to the model id of an embedder whose linear layers run in bf16.
const BF16_SUFFIX: &str = "+bf16";

/// Models known by the hash of their content, named as people know them.
const KNOWN_MODELS: &[(&str, &str)] = &[(DEFAULT_MODEL_HASH, crate::resolve::DEFAULT_MODEL_NAME)];

/// Content hash of the all-MiniLM-L6-v2 files `scripts/fetch-model` installs.
const DEFAULT_MODEL_HASH: &str = "76c8622dc0f2";

/// `<name>@<12 hex digits>`, from the model's content only, so that a byte-identical copy in
/// another folder is the same model: the digits are a blake3 hash of every input that decides
/// the vectors (configuration, pooling, tokenizer, weights and the effective token limit); the
/// name is the known name of that hash, else the last part of the configuration's
/// `_name_or_path`, else `model`. Hashing the full weights (90 MB for all-MiniLM-L6-v2) costs
/// ~20 ms at load; the bytes are mapped anyway, and a cheaper id (sizes, headers) could miss
/// a re-trained model of the same shape, which would silently mix vectors of two models in one
/// index.
fn model_id(config_json: &[u8], parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"precedent-embed model id v1");
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize().to_hex();
    let hash = &hash[..12];
    let name = KNOWN_MODELS
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| (*name).to_owned())
        .or_else(|| {
            let config: serde_json::Value = serde_json::from_slice(config_json).ok()?;
            let name = config.get("_name_or_path")?.as_str()?;
            let last = name.trim_end_matches('/').rsplit(['/', '\\']).next()?;
            Some(last.replace(['@', ' '], "_"))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".to_owned());
    format!("{name}@{hash}")
}
