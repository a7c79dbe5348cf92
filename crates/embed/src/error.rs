use std::path::{Path, PathBuf};

use precedent_core::BoxError;

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading a model, embedding texts or using the embedding cache.
///
/// Model-directory problems each have their own variant and name the file at fault, so a caller
/// can tell "not installed" ([`Error::ModelNotFound`], [`Error::ModelDirMissing`],
/// [`Error::MissingFile`]) from "installed but broken" (the others).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No usable model directory was found where one was looked for.
    #[error(
        "no embedding model found (looked in {}): run scripts/fetch-model to install \
         all-MiniLM-L6-v2, or pass --model-dir / set PRECEDENT_MODEL_DIR",
        display_paths(.tried)
    )]
    ModelNotFound {
        /// The directories tried, in order.
        tried: Vec<PathBuf>,
    },
    /// The model directory does not exist or is not a directory.
    #[error("model directory {} does not exist or is not a directory", .dir.display())]
    ModelDirMissing {
        /// The directory given.
        dir: PathBuf,
    },
    /// A file the model needs is not in the model directory.
    #[error("model directory {} has no {file}", .dir.display())]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file, relative to `dir`.
        file: &'static str,
    },
    /// A file exists but could not be read or written.
    #[error("cannot access {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON configuration file is malformed or lacks a required field.
    #[error("invalid configuration file {}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What the JSON parser reported (it names a missing field).
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` describes a model that is not BERT-family.
    #[error(
        "{} describes a {} model, only BERT-family models (model_type \"bert\") are supported",
        .path.display(),
        .model_type.as_deref().map_or_else(|| "untyped".to_owned(), |t| format!("{t:?}"))
    )]
    UnsupportedModel {
        /// The `config.json`.
        path: PathBuf,
        /// Its `model_type`, if any.
        model_type: Option<String>,
    },
    /// A configuration file parses but its values are inconsistent or unsupported.
    #[error("invalid model configuration {}: {reason}", .path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `tokenizer.json` could not be loaded.
    #[error("cannot load tokenizer {}", .path.display())]
    Tokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// What the tokenizer library reported.
        #[source]
        source: BoxError,
    },
    /// `model.safetensors` could not be parsed.
    #[error("cannot read weights {}", .path.display())]
    Weights {
        /// The `model.safetensors`.
        path: PathBuf,
        /// What candle reported.
        #[source]
        source: candle_core::Error,
    },
    /// A tensor the configuration requires is absent from the weights.
    #[error("weights {} have no tensor {name}", .path.display())]
    MissingTensor {
        /// The `model.safetensors`.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor's shape disagrees with `config.json` (for example a wrong `hidden_size`).
    #[error(
        "tensor {name} in {} has shape {actual:?} but config.json implies {expected:?}",
        .path.display()
    )]
    TensorShape {
        /// The `model.safetensors`.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// An [`EmbedderOptions`](crate::EmbedderOptions) value is out of range.
    #[error("invalid embedder option: {0}")]
    InvalidOption(String),
    /// The worker thread pool could not be started.
    #[error("cannot start the embedding thread pool")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// The tokenizer failed on an input.
    #[error("cannot tokenize input")]
    Tokenize(#[source] BoxError),
    /// The tokenizer produced a token id the model has no embedding for.
    #[error("token id {id} is outside the model's vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The candle forward pass failed.
    #[error("model forward pass failed")]
    Forward(#[from] candle_core::Error),
    /// An embedding cache file is not in the expected format.
    #[error("invalid embedding cache {}: {reason}", .path.display())]
    CacheFormat {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An embedding cache file was written for another model.
    #[error(
        "embedding cache {} was written for model {found} ({found_dim} dimensions), \
         not {expected} ({expected_dim} dimensions)",
        .path.display()
    )]
    CacheModelMismatch {
        /// The cache file.
        path: PathBuf,
        /// Model id in the file.
        found: String,
        /// Dimension in the file.
        found_dim: usize,
        /// Model id of the wrapped embedder.
        expected: String,
        /// Dimension of the wrapped embedder.
        expected_dim: usize,
    },
    /// The wrapped embedder broke the [`Embedder`](precedent_core::Embedder) contract.
    #[error("embedder {model_id} returned {reason}")]
    InnerContract {
        /// The wrapped embedder's model id.
        model_id: String,
        /// What it returned.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid_config(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere: neither XDG_CACHE_HOME nor HOME is set".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            Error::ModelNotFound {
                tried: vec![PathBuf::from("/a"), PathBuf::from("/b")],
            },
            Error::ModelNotFound { tried: vec![] },
            Error::MissingFile {
                dir: PathBuf::from("/m"),
                file: "tokenizer.json",
            },
            Error::UnsupportedModel {
                path: PathBuf::from("/m/config.json"),
                model_type: Some("gpt2".into()),
            },
            Error::UnsupportedModel {
                path: PathBuf::from("/m/config.json"),
                model_type: None,
            },
            Error::InvalidOption("batch_size must be at least 1".into()),
        ];
        for e in errors {
            let msg = e.to_string();
            let first = msg.chars().next().unwrap();
            assert!(!first.is_uppercase(), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    #[test]
    fn not_found_names_every_place_and_the_fix() {
        let msg = Error::ModelNotFound {
            tried: vec![PathBuf::from("/x/one"), PathBuf::from("/y/two")],
        }
        .to_string();
        for needle in [
            "/x/one",
            "/y/two",
            "scripts/fetch-model",
            "PRECEDENT_MODEL_DIR",
            "--model-dir",
        ] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
    }

    #[test]
    fn missing_file_names_file_and_dir() {
        let msg = Error::MissingFile {
            dir: PathBuf::from("/models/mini"),
            file: "1_Pooling/config.json",
        }
        .to_string();
        assert_eq!(
            msg,
            "model directory /models/mini has no 1_Pooling/config.json"
        );
    }
}
