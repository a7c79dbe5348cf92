//! The native BERT encoder: the same arithmetic as candle-transformers' `BertModel`, reorganised
//! for CPU throughput.
//!
//! - **Packed sequences, no padding.** The tokens of every sequence in a batch are stacked into
//!   one `[tokens, hidden]` matrix. The dense layers, which hold nearly all the FLOPs, run over
//!   real tokens only; attention runs per sequence, so no mask is needed and no FLOP is spent on
//!   padding.
//! - **Row blocks per core.** Outside attention, the stacked rows are cut into blocks of up to
//!   512 and each core takes whole blocks through every product and element-wise pass of a
//!   layer, so there is no synchronisation inside a layer and a block's activations stay in the
//!   core's L2 cache. The feed-forward runs in 384-column slices of the intermediate dimension
//!   (made, activated and consumed while in L2) instead of materialising `[tokens, 1536]`.
//! - **Fewer passes over memory.** One product for Q, K and V (weights concatenated at load);
//!   gemm writes its results without reading the destination; biases and residuals are added by
//!   the pass that reads the product anyway (attention for the QKV bias, the activation for the
//!   intermediate bias, the layer norms for output biases and residuals).
//! - **Vectorised element-wise kernels** (GELU, softmax, layer norm) for the CPU's best
//!   instruction set, and gemm's AVX-512 micro-kernels (see `kernels`).

use rayon::prelude::*;

use crate::bf16;
use crate::config::{Activation, BertConfig, Pooling};
use crate::error::Result;
use crate::kernels::{self, AlignedF32, View, ViewMut};
use crate::weights::Weights;

/// One tokenised input: token ids and token type ids of equal length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// The weight of a linear layer, `[in, out]` (transposed from the checkpoint's `[out, in]`),
/// in the precision the encoder runs its products in.
enum Linear {
    F32 { w: Vec<f32>, out: usize },
    Bf16(bf16::Packed),
}

impl Linear {
    fn new(w: Vec<f32>, inp: usize, out: usize, kernel: Option<bf16::Kernel>) -> Self {
        match kernel {
            Some(_) => Linear::Bf16(bf16::Packed::new(&w, inp, out)),
            None => Linear::F32 { w, out },
        }
    }
}

struct Layer {
    /// `[hidden, 3 * hidden]`: query, key and value weights side by side.
    qkv_w: Linear,
    qkv_b: Vec<f32>,
    /// `[hidden, hidden]`.
    out_w: Linear,
    out_b: Vec<f32>,
    attn_norm: Norm,
    /// `[hidden, intermediate]`.
    up_w: Linear,
    up_b: Vec<f32>,
    /// `[intermediate, hidden]`.
    down_w: Linear,
    down_b: Vec<f32>,
    out_norm: Norm,
}

pub(crate) struct NativeBert {
    hidden: usize,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f32,
    activation: Activation,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    /// The bf16 kernel of the linear layers; `None`: f32 with gemm.
    kernel: Option<bf16::Kernel>,
}

/// Most rows per block. Rows are the unit of work outside attention: one core takes a block
/// through every product and element-wise pass of a layer. Larger blocks amortise gemm's
/// packing of the weights (repeated for each block); smaller ones balance better.
const MAX_BLOCK_ROWS: usize = 512;

/// Up to this many rows (a few short queries) all rows form one block and gemm splits each
/// product between the threads instead: blocks this small would each stream every weight from
/// memory (gemm does not pack operands this thin), where a split product streams each weight
/// once.
const SPLIT_ROWS: usize = 96;

/// Up to this many rows on the AMX kernel, a forward pass runs on one thread: measured on a
/// 31-token query, p50 1.56-1.63 ms on one thread against 2.03-2.05 ms with each product split
/// in two (`bench_embed --precision bf16`).
const SOLO_AMX_ROWS: usize = 64;

/// Columns of the intermediate activations made at a time (`block rows x chunk` floats stay in
/// L2).
const FFN_CHUNK: usize = 384;

impl NativeBert {
    /// Loads the encoder; with `kernel`, the linear layers' weights are rounded to bf16 and
    /// their products run on that kernel (attention and everything else stays f32).
    pub fn load(
        weights: &Weights<'_>,
        c: &BertConfig,
        kernel: Option<bf16::Kernel>,
    ) -> Result<Self> {
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                gamma: weights.vec(&format!("{p}.weight"), &[h])?,
                beta: weights.vec(&format!("{p}.bias"), &[h])?,
            })
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let q = weights.transposed(&format!("{p}.attention.self.query.weight"), h, h)?;
            let k = weights.transposed(&format!("{p}.attention.self.key.weight"), h, h)?;
            let v = weights.transposed(&format!("{p}.attention.self.value.weight"), h, h)?;
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            for row in 0..h {
                for m in [&q, &k, &v] {
                    qkv_w.extend_from_slice(&m[row * h..(row + 1) * h]);
                }
            }
            let mut qkv_b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_b.extend(weights.vec(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
                let w = weights.transposed(&format!("{p}.{name}"), out, inp)?;
                Ok(Linear::new(w, inp, out, kernel))
            };
            layers.push(Layer {
                qkv_w: Linear::new(qkv_w, h, 3 * h, kernel),
                qkv_b,
                out_w: linear("attention.output.dense.weight", h, h)?,
                out_b: weights.vec(&format!("{p}.attention.output.dense.bias"), &[h])?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up_w: linear("intermediate.dense.weight", f, h)?,
                up_b: weights.vec(&format!("{p}.intermediate.dense.bias"), &[f])?,
                down_w: linear("output.dense.weight", h, f)?,
                down_b: weights.vec(&format!("{p}.output.dense.bias"), &[h])?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            hidden: h,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            intermediate: f,
            eps: c.layer_norm_eps as f32,
            activation: c.activation,
            word: weights.vec("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: weights.vec(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: weights.vec(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
            kernel,
        })
    }

    /// Pooled, L2-normalised embeddings of `seqs`, in order. Must run inside the rayon pool
    /// that `threads` describes.
    pub fn embed(&self, seqs: &[Seq<'_>], pooling: Pooling, threads: usize) -> Vec<Vec<f32>> {
        let states = self.encode(seqs, threads);
        let h = self.hidden;
        let mut start = 0;
        seqs.iter()
            .map(|seq| {
                let rows = &states[start * h..(start + seq.ids.len()) * h];
                start += seq.ids.len();
                let mut v = match pooling {
                    // No tokens (a tokenizer without special tokens, an empty text): zeros.
                    Pooling::Cls => rows.get(..h).map_or_else(|| vec![0.0; h], <[f32]>::to_vec),
                    Pooling::Mean => {
                        let mut acc = vec![0f32; h];
                        for row in rows.chunks_exact(h) {
                            for (a, x) in acc.iter_mut().zip(row) {
                                *a += x;
                            }
                        }
                        let inv = 1.0 / seq.ids.len().max(1) as f32;
                        acc.iter_mut().for_each(|a| *a *= inv);
                        acc
                    }
                };
                kernels::l2_normalize(&mut v);
                v
            })
            .collect()
    }

    /// Last hidden states of all tokens of `seqs`, stacked: `[total tokens, hidden]`.
    ///
    /// Callers guarantee every id is inside the vocabulary, every type id inside the type
    /// vocabulary and every sequence no longer than the position table.
    pub fn encode(&self, seqs: &[Seq<'_>], threads: usize) -> AlignedF32 {
        let h = self.hidden;
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let lens: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
        let block = block_rows(total, threads);
        // Fewer blocks than threads (short queries): split each product's columns instead, but
        // not on AMX up to SOLO_AMX_ROWS, where a product takes microseconds and waking the
        // other thread costs more than it saves.
        let solo = self.kernel == Some(bf16::Kernel::Amx) && total <= SOLO_AMX_ROWS;
        let parts = if total.div_ceil(block) < threads && !solo {
            threads
        } else {
            1
        };
        // Slicing the feed-forward keeps a large block's activations in L2; a small block's fit
        // whole, and fewer, larger products waste less per call.
        let chunk = if block <= SPLIT_ROWS {
            self.intermediate
        } else {
            FFN_CHUNK
        };

        let mut x = AlignedF32::zeros(total * h);
        {
            let mut rows = x.chunks_exact_mut(h);
            for seq in seqs {
                for (pos, (&id, &ty)) in seq.ids.iter().zip(seq.type_ids).enumerate() {
                    let row = rows.next().expect("one row per token");
                    let word = &self.word[id as usize * h..][..h];
                    let position = &self.position[pos * h..][..h];
                    let token_type = &self.token_type[ty as usize * h..][..h];
                    for (((r, w), p), t) in row.iter_mut().zip(word).zip(position).zip(token_type) {
                        *r = w + p + t;
                    }
                }
            }
        }
        let norm = &self.emb_norm;
        x.par_chunks_mut(block * h).for_each(|x| {
            kernels::layer_norm_rows(x, None, None, &norm.gamma, &norm.beta, self.eps);
        });

        let mut qkv = AlignedF32::zeros(total * 3 * h);
        let mut ctx = AlignedF32::zeros(total * h);
        for layer in &self.layers {
            qkv.par_chunks_mut(block * 3 * h)
                .zip(x.par_chunks(block * h))
                .for_each(|(qkv, x)| self.project_qkv(layer, x, qkv, parts));
            self.attention(&layer.qkv_b, &mut qkv, &mut ctx, &lens);
            x.par_chunks_mut(block * h)
                .zip(ctx.par_chunks(block * h))
                .for_each_init(
                    || Scratch::new(block, h, chunk),
                    |scratch, (x, ctx)| self.finish_layer(layer, x, ctx, scratch, parts),
                );
        }
        x
    }

    /// `qkv = x · Wqkv` for one block of rows; [`attention`](Self::attention) adds the bias
    /// when the rows are in cache anyway.
    fn project_qkv(&self, layer: &Layer, x: &[f32], qkv: &mut [f32], parts: usize) {
        let h = self.hidden;
        self.linear(qkv, false, x, &layer.qkv_w, (0, h), (0, 3 * h), parts);
    }

    /// `dst = (accumulate ? dst : 0) + a · w[k0..k0 + k, n0..n0 + n]`, `a` and `dst` dense
    /// row-major, in the encoder's precision.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        dst: &mut [f32],
        accumulate: bool,
        a: &[f32],
        w: &Linear,
        (k0, k): (usize, usize),
        (n0, n): (usize, usize),
        parts: usize,
    ) {
        let rows = a.len() / k;
        match (w, self.kernel) {
            (Linear::Bf16(packed), Some(kernel)) => {
                bf16::matmul(kernel, dst, accumulate, a, packed.view(k0, k, n0, n), parts);
            }
            (Linear::F32 { w, out }, _) => kernels::matmul(
                ViewMut::dense(dst, rows, n),
                accumulate,
                View::dense(a, rows, k),
                View {
                    data: w,
                    offset: k0 * out + n0,
                    rows: k,
                    cols: n,
                    rs: *out,
                    cs: 1,
                },
                1.0,
                parts,
            ),
            (Linear::Bf16(_), None) => unreachable!("bf16 weights are packed only with a kernel"),
        }
    }

    /// The rest of a layer after attention, for one block of rows, in place in `x`:
    /// `a = LayerNorm(x + ctx · Wo + bo)`, then `x = LayerNorm(a + act(a · W1 + b1) · W2 + b2)`.
    ///
    /// The feed-forward runs in slices of the intermediate dimension: each slice's activations
    /// are made, activated and consumed while they are in L2, and each weight is still read
    /// once per block.
    fn finish_layer(
        &self,
        layer: &Layer,
        x: &mut [f32],
        ctx: &[f32],
        scratch: &mut Scratch,
        parts: usize,
    ) {
        let (h, f) = (self.hidden, self.intermediate);
        let rows = x.len() / h;
        let attn = &mut scratch.attn[..rows * h];
        self.linear(attn, false, ctx, &layer.out_w, (0, h), (0, h), parts);
        let norm = &layer.attn_norm;
        kernels::layer_norm_rows(
            attn,
            Some(x),
            Some(&layer.out_b),
            &norm.gamma,
            &norm.beta,
            self.eps,
        );

        let chunk = scratch.chunk;
        for start in (0..f).step_by(chunk) {
            let width = chunk.min(f - start);
            let inter = &mut scratch.inter[..rows * width];
            self.linear(
                inter,
                false,
                attn,
                &layer.up_w,
                (0, h),
                (start, width),
                parts,
            );
            self.activate(inter, &layer.up_b[start..start + width]);
            self.linear(
                x,
                start > 0,
                inter,
                &layer.down_w,
                (start, width),
                (0, h),
                parts,
            );
        }
        let norm = &layer.out_norm;
        kernels::layer_norm_rows(
            x,
            Some(attn),
            Some(&layer.down_b),
            &norm.gamma,
            &norm.beta,
            self.eps,
        );
    }

    /// Self-attention of each sequence on its own rows of `qkv` (after adding `qkv_bias` to
    /// them), into `ctx`.
    fn attention(&self, qkv_bias: &[f32], qkv: &mut [f32], ctx: &mut [f32], lens: &[usize]) {
        let (h, d) = (self.hidden, self.head_dim);
        let width = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let mut parts = Vec::with_capacity(lens.len());
        let (mut qkv_rest, mut ctx_rest) = (qkv, ctx);
        for &len in lens {
            let (rows, qkv_tail) = qkv_rest.split_at_mut(len * width);
            let (out, ctx_tail) = ctx_rest.split_at_mut(len * h);
            parts.push((len, rows, out));
            (qkv_rest, ctx_rest) = (qkv_tail, ctx_tail);
        }
        parts.into_par_iter().for_each(|(len, rows, out)| {
            if len == 0 {
                return;
            }
            for row in rows.chunks_exact_mut(width) {
                for (x, b) in row.iter_mut().zip(qkv_bias) {
                    *x += b;
                }
            }
            if let Some(kernel) = self.kernel
                && bf16::attention_supported(kernel, d)
            {
                bf16::attention(kernel, rows, out, self.heads, d, scale);
                return;
            }
            let rows = &*rows;
            let mut scores = vec![0f32; len * len];
            for head in 0..self.heads {
                let q = View {
                    data: rows,
                    offset: head * d,
                    rows: len,
                    cols: d,
                    rs: width,
                    cs: 1,
                };
                // K transposed: element (i, j) is K[j][i].
                let k_t = View {
                    data: rows,
                    offset: h + head * d,
                    rows: d,
                    cols: len,
                    rs: 1,
                    cs: width,
                };
                kernels::matmul(
                    ViewMut::dense(&mut scores, len, len),
                    false,
                    q,
                    k_t,
                    scale,
                    1,
                );
                kernels::softmax_rows(&mut scores, len);
                let v = View {
                    data: rows,
                    offset: 2 * h + head * d,
                    rows: len,
                    cols: d,
                    rs: width,
                    cs: 1,
                };
                kernels::matmul(
                    ViewMut {
                        data: &mut *out,
                        offset: head * d,
                        rows: len,
                        cols: d,
                        rs: h,
                        cs: 1,
                    },
                    false,
                    View::dense(&scores, len, len),
                    v,
                    1.0,
                    1,
                );
            }
        });
    }

    /// `xs = act(xs + bias)` row by row.
    fn activate(&self, xs: &mut [f32], bias: &[f32]) {
        match self.activation {
            Activation::Gelu => kernels::bias_gelu_erf(xs, bias),
            Activation::GeluTanh => kernels::bias_gelu_tanh(xs, bias),
            Activation::Relu => kernels::bias_relu(xs, bias),
        }
    }
}

/// Per-task buffers of [`NativeBert::finish_layer`].
struct Scratch {
    attn: AlignedF32,
    inter: AlignedF32,
    chunk: usize,
}

impl Scratch {
    fn new(rows: usize, hidden: usize, chunk: usize) -> Self {
        Self {
            attn: AlignedF32::zeros(rows * hidden),
            inter: AlignedF32::zeros(rows * chunk),
            chunk,
        }
    }
}

/// Rows per block: at most [`MAX_BLOCK_ROWS`], and a multiple of `threads` blocks so that every
/// thread gets the same share; a single block up to [`SPLIT_ROWS`].
fn block_rows(total: usize, threads: usize) -> usize {
    if total <= SPLIT_ROWS {
        return total.max(1);
    }
    let threads = threads.max(1);
    let blocks = threads * total.div_ceil(threads * MAX_BLOCK_ROWS).max(1);
    total.div_ceil(blocks).max(1)
}
