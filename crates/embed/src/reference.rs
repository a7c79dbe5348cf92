//! The candle backend: candle-transformers' `BertModel` on padded batches with attention masks.
//! Slower than the native encoder, kept as an independent implementation to check it against.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;

use crate::config::{BertConfig, Pooling};
use crate::error::Result;
use crate::kernels;
use crate::native::Seq;

pub(crate) struct CandleBert {
    model: BertModel,
    pad_id: u32,
    hidden: usize,
}

impl CandleBert {
    pub fn load(
        tensors: std::collections::HashMap<String, Tensor>,
        config: &BertConfig,
    ) -> Result<Self> {
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config.to_candle())?;
        Ok(Self {
            model,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
            hidden: config.hidden_size,
        })
    }

    /// Last hidden states `[batch, longest, hidden]` of the sequences, padded on the right,
    /// padding masked out of attention.
    fn forward(&self, seqs: &[Seq<'_>]) -> Result<Tensor> {
        let longest = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let n = seqs.len();
        let mut ids = vec![self.pad_id; n * longest];
        let mut types = vec![0u32; n * longest];
        let mut mask = vec![0u32; n * longest];
        for (i, seq) in seqs.iter().enumerate() {
            let row = i * longest;
            ids[row..row + seq.ids.len()].copy_from_slice(seq.ids);
            types[row..row + seq.ids.len()].copy_from_slice(seq.type_ids);
            mask[row..row + seq.ids.len()].fill(1);
        }
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, longest), dev)?;
        let types = Tensor::from_vec(types, (n, longest), dev)?;
        let mask = Tensor::from_vec(mask, (n, longest), dev)?;
        Ok(self.model.forward(&ids, &types, Some(&mask))?)
    }

    pub fn embed(&self, seqs: &[Seq<'_>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        let hidden = self.hidden;
        if seqs.iter().all(|s| s.ids.is_empty()) {
            return Ok(vec![vec![0.0; hidden]; seqs.len()]);
        }
        let states = self.forward(seqs)?;
        let pooled = match pooling {
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let (n, longest, _) = states.dims3()?;
                let mut mask = vec![0f32; n * longest];
                for (i, seq) in seqs.iter().enumerate() {
                    mask[i * longest..i * longest + seq.ids.len()].fill(1.0);
                }
                let mask = Tensor::from_vec(mask, (n, longest, 1), &Device::Cpu)?;
                let sums = states.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1f32, f32::MAX)?;
                sums.broadcast_div(&counts)?
            }
        };
        let mut vectors = pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (v, seq) in vectors.iter_mut().zip(seqs) {
            if seq.ids.is_empty() {
                // An input without tokens has no state of its own, only padding's.
                v.fill(0.0);
            }
            kernels::l2_normalize(v);
        }
        Ok(vectors)
    }

    /// Last hidden states of one unpadded sequence, `[tokens, hidden]` flattened.
    pub fn encode_one(&self, seq: Seq<'_>) -> Result<Vec<f32>> {
        if seq.ids.is_empty() {
            return Ok(Vec::new());
        }
        let states = self.forward(&[seq])?;
        Ok(states
            .squeeze(0)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }
}
