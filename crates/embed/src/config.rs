//! Reading a sentence-transformers model directory: which files, what they must say.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const TOKENIZER: &str = "tokenizer.json";
pub(crate) const WEIGHTS: &str = "model.safetensors";
pub(crate) const POOLING: &str = "1_Pooling/config.json";
pub(crate) const SBERT: &str = "sentence_bert_config.json";

/// Files a model directory must have; `sentence_bert_config.json` is optional.
pub(crate) const REQUIRED: [&str; 4] = [CONFIG, TOKENIZER, WEIGHTS, POOLING];

/// Used when `sentence_bert_config.json` is absent, as sentence-transformers' own default for
/// these models.
pub(crate) const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// How token states become one vector, from `1_Pooling/config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// Average of every token's last hidden state, `[CLS]` and `[SEP]` included
    /// (`pooling_mode_mean_tokens`).
    Mean,
    /// The last hidden state of the first token, `[CLS]` (`pooling_mode_cls_token`).
    Cls,
}

/// Activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
    Relu,
}

/// The validated subset of a BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    pub model_type: String,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The same configuration in candle-transformers' terms, for the reference backend.
    pub fn to_candle(&self) -> candle_transformers::models::bert::Config {
        use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
        Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: match self.activation {
                Activation::Gelu => HiddenAct::Gelu,
                Activation::GeluTanh => HiddenAct::GeluApproximate,
                Activation::Relu => HiddenAct::Relu,
            },
            hidden_dropout_prob: 0.0,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            initializer_range: 0.02,
            layer_norm_eps: self.layer_norm_eps,
            pad_token_id: self.pad_token_id,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: Some(self.model_type.clone()),
        }
    }
}

/// `config.json` as written by transformers; only what we check or use.
#[derive(Deserialize)]
struct RawBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    word_embedding_dimension: Option<usize>,
}

#[derive(Deserialize)]
struct RawSbert {
    max_seq_length: Option<usize>,
}

/// Checks that `dir` is a directory holding every required file.
pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::ModelDirMissing {
            dir: dir.to_owned(),
        });
    }
    for file in REQUIRED {
        if !dir.join(file).is_file() {
            return Err(Error::MissingFile {
                dir: dir.to_owned(),
                file,
            });
        }
    }
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// The file at `path` mapped read-only into memory: the weights are read from the page cache in
/// place, not copied into a buffer first (90 MB for all-MiniLM-L6-v2, about half of a load).
pub(crate) fn map(path: &Path) -> Result<memmap2::Mmap> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only while the model loads. Another process
    // truncating the file meanwhile would fault this one (as for every mmap reader of model
    // files, candle's and safetensors' own included); the model directory is ours to read, and
    // every byte read is checked (safetensors header, shapes) before use.
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|e| Error::io(path, e))
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Config {
        path: path.to_owned(),
        source,
    })
}

/// Parses and validates `config.json`.
pub(crate) fn parse_bert_config(path: &Path, bytes: &[u8]) -> Result<BertConfig> {
    // Look at `model_type` before demanding BERT's fields, so that a GPT-2 config is reported as
    // the wrong kind of model rather than as a BERT config missing `hidden_size`.
    #[derive(Deserialize)]
    struct ModelType {
        model_type: Option<String>,
    }
    let model_type = parse::<ModelType>(path, bytes)?.model_type;
    if model_type.as_deref() != Some("bert") {
        return Err(Error::UnsupportedModel {
            path: path.to_owned(),
            model_type,
        });
    }
    let raw: RawBertConfig = parse(path, bytes)?;
    let invalid = |reason: String| Error::invalid_config(path, reason);
    let activation = match raw.hidden_act.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => return Err(invalid(format!("unsupported hidden_act {other:?}"))),
    };
    if let Some(kind) = raw.position_embedding_type.as_deref()
        && kind != "absolute"
    {
        return Err(invalid(format!(
            "unsupported position_embedding_type {kind:?}, only \"absolute\" is"
        )));
    }
    for (name, value) in [
        ("vocab_size", raw.vocab_size),
        ("hidden_size", raw.hidden_size),
        ("num_hidden_layers", raw.num_hidden_layers),
        ("num_attention_heads", raw.num_attention_heads),
        ("intermediate_size", raw.intermediate_size),
        ("max_position_embeddings", raw.max_position_embeddings),
        ("type_vocab_size", raw.type_vocab_size),
    ] {
        if value == 0 {
            return Err(invalid(format!("{name} is 0")));
        }
    }
    if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
        return Err(invalid(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            raw.hidden_size, raw.num_attention_heads
        )));
    }
    if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
        return Err(invalid(format!(
            "layer_norm_eps {} is not a positive number",
            raw.layer_norm_eps
        )));
    }
    Ok(BertConfig {
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        intermediate_size: raw.intermediate_size,
        activation,
        max_position_embeddings: raw.max_position_embeddings,
        type_vocab_size: raw.type_vocab_size,
        layer_norm_eps: raw.layer_norm_eps,
        pad_token_id: raw.pad_token_id.unwrap_or(0),
        model_type: model_type.unwrap_or_default(),
    })
}

/// Parses `1_Pooling/config.json`; exactly one of the mean and CLS modes may be on.
pub(crate) fn parse_pooling(path: &Path, bytes: &[u8], hidden_size: usize) -> Result<Pooling> {
    let raw: RawPooling = parse(path, bytes)?;
    let invalid = |reason: String| Error::invalid_config(path, reason);
    for (name, on) in [
        ("pooling_mode_max_tokens", raw.pooling_mode_max_tokens),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            raw.pooling_mode_mean_sqrt_len_tokens,
        ),
        (
            "pooling_mode_weightedmean_tokens",
            raw.pooling_mode_weightedmean_tokens,
        ),
        ("pooling_mode_lasttoken", raw.pooling_mode_lasttoken),
    ] {
        if on {
            return Err(invalid(format!(
                "{name} is not supported, only mean or CLS pooling is"
            )));
        }
    }
    if let Some(dim) = raw.word_embedding_dimension
        && dim != hidden_size
    {
        return Err(invalid(format!(
            "word_embedding_dimension {dim} differs from config.json's hidden_size {hidden_size}"
        )));
    }
    match (raw.pooling_mode_mean_tokens, raw.pooling_mode_cls_token) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        (true, true) => Err(invalid(
            "both pooling_mode_mean_tokens and pooling_mode_cls_token are set, \
             concatenated poolings are not supported"
                .to_owned(),
        )),
        (false, false) => Err(invalid(
            "neither pooling_mode_mean_tokens nor pooling_mode_cls_token is set".to_owned(),
        )),
    }
}

/// `max_seq_length` from `sentence_bert_config.json`, if the file exists and sets it.
pub(crate) fn read_sbert_max_seq_len(dir: &Path) -> Result<Option<(PathBuf, usize)>> {
    let path = dir.join(SBERT);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let raw: RawSbert = parse(&path, &bytes)?;
    Ok(raw.max_seq_length.map(|n| (path, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{
        "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384,
        "intermediate_size": 1536, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 6,
        "pad_token_id": 0, "position_embedding_type": "absolute", "type_vocab_size": 2,
        "vocab_size": 30522
    }"#;

    fn config(json: &str) -> Result<BertConfig> {
        parse_bert_config(Path::new("config.json"), json.as_bytes())
    }

    fn pooling(json: &str) -> Result<Pooling> {
        parse_pooling(Path::new("1_Pooling/config.json"), json.as_bytes(), 384)
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(MINILM).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(MINILM).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    #[test]
    fn minilm_config_parses() {
        let c = config(MINILM).unwrap();
        assert_eq!(c.hidden_size, 384);
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.activation, Activation::Gelu);
        assert_eq!(c.to_candle().hidden_size, 384);
    }

    #[test]
    fn non_bert_configs_are_rejected_by_type() {
        let gpt2 = r#"{"model_type": "gpt2", "n_embd": 768, "n_layer": 12}"#;
        assert!(matches!(
            config(gpt2),
            Err(Error::UnsupportedModel { model_type: Some(t), .. }) if t == "gpt2"
        ));
        assert!(matches!(
            config(&without("model_type")),
            Err(Error::UnsupportedModel {
                model_type: None,
                ..
            })
        ));
    }

    #[test]
    fn missing_field_is_named() {
        let err = config(&without("hidden_size")).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("hidden_size"), "{source}");
    }

    #[test]
    fn inconsistent_values_are_rejected() {
        for (field, value) in [
            ("num_attention_heads", "5"),
            ("hidden_size", "0"),
            ("hidden_act", "\"swish\""),
            ("position_embedding_type", "\"relative_key\""),
            ("layer_norm_eps", "-1.0"),
        ] {
            let err = config(&with(field, value)).unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig { .. }),
                "{field}: {err:?}"
            );
        }
        assert!(config("not json").is_err());
    }

    #[test]
    fn pooling_modes() {
        let check = |json: &str, expected: Option<Pooling>| {
            assert_eq!(pooling(json).ok(), expected, "{json}");
        };
        check(r#"{"pooling_mode_mean_tokens": true}"#, Some(Pooling::Mean));
        check(
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
            Some(Pooling::Cls),
        );
        check(r#"{}"#, None);
        check(
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
            None,
        );
        check(
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#,
            None,
        );
        check(
            r#"{"pooling_mode_mean_tokens": true, "word_embedding_dimension": 768}"#,
            None,
        );
    }
}
