//! Finding and checking BERT tensors in a safetensors file before any backend uses them.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::config::BertConfig;
use crate::error::{Error, Result};

/// The tensors of a checkpoint, read in place from its bytes, with the name prefix its BERT
/// weights use (`""`, `"bert."` or `"<model_type>."`), every expected tensor checked against the
/// configuration.
pub(crate) struct Weights<'a> {
    tensors: SafeTensors<'a>,
    bytes: &'a [u8],
    prefix: String,
    path: &'a Path,
}

impl<'a> Weights<'a> {
    /// Parses `bytes` (the content of `path`) and checks every tensor the configuration implies.
    pub fn parse(path: &'a Path, bytes: &'a [u8], config: &BertConfig) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| Error::Weights {
            path: path.to_owned(),
            source: candle_core::Error::from(e),
        })?;
        const PROBE: &str = "embeddings.word_embeddings.weight";
        let prefix = [
            String::new(),
            "bert.".to_owned(),
            format!("{}.", config.model_type),
        ]
        .into_iter()
        .find(|p| tensors.tensor(&format!("{p}{PROBE}")).is_ok())
        .ok_or_else(|| Error::MissingTensor {
            path: path.to_owned(),
            name: PROBE.to_owned(),
        })?;
        let weights = Self {
            tensors,
            bytes,
            prefix,
            path,
        };
        for (name, shape) in expected(config) {
            weights.tensor(&name, &shape)?;
        }
        Ok(weights)
    }

    /// All tensors as candle tensors, for candle's `VarBuilder` (copied out of the bytes).
    pub fn into_tensors(self) -> Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load_buffer(self.bytes, &candle_core::Device::Cpu).map_err(
            |source| Error::Weights {
                path: self.path.to_owned(),
                source,
            },
        )
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<safetensors::tensor::TensorView<'a>> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self
            .tensors
            .tensor(&full)
            .map_err(|_| Error::MissingTensor {
                path: self.path.to_owned(),
                name: full.clone(),
            })?;
        if tensor.shape() != shape {
            return Err(Error::TensorShape {
                path: self.path.to_owned(),
                name: full,
                expected: shape.to_vec(),
                actual: tensor.shape().to_vec(),
            });
        }
        Ok(tensor)
    }

    /// The tensor `name` as f32 values in row-major order: f32 straight from the bytes, other
    /// types through candle's conversion.
    pub fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let tensor = self.tensor(name, shape)?;
        if tensor.dtype() == Dtype::F32 {
            return Ok(tensor
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect());
        }
        tensor
            .load(&candle_core::Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|source| Error::Weights {
                path: self.path.to_owned(),
                source,
            })
    }

    /// A linear layer's `[out, in]` weight, transposed to `[in, out]` row-major.
    pub fn transposed(&self, name: &str, out: usize, inp: usize) -> Result<Vec<f32>> {
        let w = self.vec(name, &[out, inp])?;
        let mut t = vec![0f32; w.len()];
        for (o, row) in w.chunks_exact(inp).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                t[i * out + o] = v;
            }
        }
        Ok(t)
    }
}

/// Every tensor a BERT encoder needs, with the shape the configuration implies.
fn expected(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let mut all = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_owned(), vec![h]),
        ("embeddings.LayerNorm.bias".to_owned(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![f, h]),
            ("intermediate.dense.bias", vec![f]),
            ("output.dense.weight", vec![h, f]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            all.push((format!("{p}{name}"), shape));
        }
    }
    all
}
