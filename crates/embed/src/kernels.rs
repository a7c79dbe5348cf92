//! Numeric kernels of the native forward pass.
//!
//! The element-wise kernels are plain Rust written so that LLVM vectorises them (no calls into
//! libm, branch-free selects, several accumulators for sums). The shipped binary targets baseline
//! x86-64, so each kernel is compiled three times, for AVX-512, for AVX2+FMA and for the baseline,
//! and the best one for the running CPU is picked once, at run time. Matrix products go to the
//! `gemm` crate (the one candle uses), whose AVX-512 micro-kernels this crate switches on with
//! gemm's `x86-v4` feature; gemm also picks them at run time.

use gemm::Parallelism;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Baseline,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Isa::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Isa::Avx2
            } else {
                Isa::Baseline
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Isa::Baseline
}

/// Name of the instruction set the element-wise kernels run with on this CPU.
pub(crate) fn isa_name() -> &'static str {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2+fma",
        Isa::Baseline => "baseline",
    }
}

/// Defines `pub(crate) fn $name(args)` that runs `$imp(args)` compiled for the best instruction
/// set of the running CPU.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $imp:ident;) => {
        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` saw every enabled feature on this CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $imp($($arg),*)
        }
    };
}

/// For each row of `xs` (rows of `bias.len()` values), in place: exact GELU of the row plus
/// `bias`, `0.5 x (1 + erf(x / sqrt 2))`.
pub(crate) fn bias_gelu_erf(xs: &mut [f32], bias: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY: `isa()` saw AVX-512 F/BW/DQ/VL on this CPU.
        return unsafe { avx512::bias_gelu_erf(xs, bias) };
    }
    bias_gelu_erf_portable(xs, bias);
}

multiversion! {
    /// [`bias_gelu_erf`] as LLVM vectorises it (AVX2 and baseline CPUs).
    fn bias_gelu_erf_portable(xs: &mut [f32], bias: &[f32]) => bias_gelu_erf_impl;
}

multiversion! {
    /// As [`bias_gelu_erf`] with the tanh approximation of GELU (`gelu_new`).
    fn bias_gelu_tanh(xs: &mut [f32], bias: &[f32]) => bias_gelu_tanh_impl;
}

multiversion! {
    /// As [`bias_gelu_erf`] with ReLU.
    fn bias_relu(xs: &mut [f32], bias: &[f32]) => bias_relu_impl;
}

multiversion! {
    /// For each row of `xs` (rows of `gamma.len()` values), in place: adds the matching row of
    /// `residual` and `bias` when given, then layer normalisation with `gamma`, `beta`, `eps`.
    fn layer_norm_rows(
        xs: &mut [f32],
        residual: Option<&[f32]>,
        bias: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) => layer_norm_rows_impl;
}

/// Softmax of each row of `xs` (rows of `width` values) in place.
pub(crate) fn softmax_rows(xs: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY: `isa()` saw AVX-512 F/BW/DQ/VL on this CPU.
        return unsafe { avx512::softmax_rows(xs, width) };
    }
    softmax_rows_portable(xs, width);
}

multiversion! {
    /// [`softmax_rows`] as LLVM vectorises it (AVX2 and baseline CPUs).
    fn softmax_rows_portable(xs: &mut [f32], width: usize) => softmax_rows_impl;
}

/// Hand-written AVX-512 forms of the two element-wise kernels that dominate once the products
/// run on AMX (softmax and GELU, about a fifth of a bf16 forward pass as LLVM vectorised them):
/// fused multiply-adds, `vscalefps` for the `2^n` of `exp`, and `vrcp14ps` with one Newton step
/// instead of a division. Same formulas as the portable kernels, so the same accuracy.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes of a `__m512`.
    const W: usize = 16;

    /// Mask of the first `n` lanes (`n <= 16`).
    #[inline(always)]
    pub(crate) fn lanes(n: usize) -> __mmask16 {
        if n >= W { 0xffff } else { (1u16 << n) - 1 }
    }

    /// `e^x` per lane, the portable `exp` with FMAs: `x = n ln 2 + r`, Cephes' degree-6
    /// polynomial in `r`, `* 2^n` by `vscalefps`. Inputs clamped to [-87.3, 88.3].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
            _mm512_set1_ps(88.3),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_LO), r);
        let mut p = _mm512_set1_ps(super::EXP_POLY[0]);
        for &c in &super::EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(y, n)
    }

    /// `0.5 x (1 + erf(x / sqrt 2))` per lane, erf as in the portable `gelu_erf_one`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    fn gelu_erf(x: __m512) -> __m512 {
        let a = _mm512_mul_ps(
            _mm512_abs_ps(x),
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        );
        let d = _mm512_fmadd_ps(a, _mm512_set1_ps(super::ERF_P), _mm512_set1_ps(1.0));
        // 1 / d: 14 bits, then one Newton step to full precision (d >= 1).
        let t = _mm512_rcp14_ps(d);
        let t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0)));
        let mut p = _mm512_set1_ps(super::ERF_POLY[0]);
        for &c in &super::ERF_POLY[1..] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
        }
        let erfc = _mm512_mul_ps(
            _mm512_mul_ps(p, t),
            exp(_mm512_mul_ps(_mm512_xor_ps(a, _mm512_set1_ps(-0.0)), a)),
        );
        let positive = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
        let g = _mm512_mask_sub_ps(erfc, positive, _mm512_set1_ps(2.0), erfc);
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), g)
    }

    /// See [`super::bias_gelu_erf`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/DQ/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn bias_gelu_erf(xs: &mut [f32], bias: &[f32]) {
        let width = bias.len();
        if width == 0 {
            return;
        }
        for row in xs.chunks_exact_mut(width) {
            for j in (0..width).step_by(W) {
                let mask = lanes(width - j);
                // SAFETY: the masked lanes are `j..min(j + 16, width)`, inside `row` and `bias`.
                unsafe {
                    let x = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(j));
                    let b = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(j));
                    let y = gelu_erf(_mm512_add_ps(x, b));
                    _mm512_mask_storeu_ps(row.as_mut_ptr().add(j), mask, y);
                }
            }
        }
    }

    /// Of one row: its maximum, then `row = e^(row - max)`, returning the sum.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/DQ/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(crate) unsafe fn exp_shifted(row: &mut [f32]) -> f32 {
        let width = row.len();
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for j in (0..width).step_by(W) {
            // SAFETY: the masked lanes are inside `row`.
            let x = unsafe { _mm512_mask_loadu_ps(m, lanes(width - j), row.as_ptr().add(j)) };
            m = _mm512_max_ps(m, x);
        }
        let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut sum = _mm512_setzero_ps();
        for j in (0..width).step_by(W) {
            let mask = lanes(width - j);
            // SAFETY: as above.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(j));
                let e = exp(_mm512_sub_ps(x, m));
                sum = _mm512_mask_add_ps(sum, mask, sum, e);
                _mm512_mask_storeu_ps(row.as_mut_ptr().add(j), mask, e);
            }
        }
        _mm512_reduce_add_ps(sum)
    }

    /// See [`super::softmax_rows`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/DQ/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn softmax_rows(xs: &mut [f32], width: usize) {
        if width == 0 {
            return;
        }
        for row in xs.chunks_exact_mut(width) {
            // SAFETY: the caller's contract.
            let inv = _mm512_set1_ps(1.0 / unsafe { exp_shifted(row) });
            for j in (0..width).step_by(W) {
                let mask = lanes(width - j);
                // SAFETY: the masked lanes are inside `row`.
                unsafe {
                    let p = row.as_mut_ptr().add(j);
                    _mm512_mask_storeu_ps(
                        p,
                        mask,
                        _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, p), inv),
                    );
                }
            }
        }
    }
}

/// f32 values in storage aligned to 64-byte cache lines, for activations that the AMX kernels
/// load and store as tiles of 64-byte rows: on the allocator's 16-byte alignment each row spans
/// two lines, and a 464 x 384 x 1152 bf16 product ran at 1,350 against 1,620 GFLOP/s aligned.
#[derive(Clone, Default)]
pub(crate) struct AlignedF32 {
    lines: Vec<F32Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct F32Line([f32; 16]);

impl AlignedF32 {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut v = Self::default();
        v.fill_zeros(len);
        v
    }

    /// Resizes to `len` zeros, keeping the allocation.
    pub fn fill_zeros(&mut self, len: usize) {
        self.lines.clear();
        self.resize(len);
    }

    /// Resizes to `len` values: those it had stay, new ones are zero.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(16), F32Line([0.0; 16]));
        self.len = len;
    }
}

impl std::ops::Deref for AlignedF32 {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` f32 (16 per line, no padding).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedF32 {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// Scales `xs` to unit L2 norm (left as is when all zero), like `torch.nn.functional.normalize`.
pub(crate) fn l2_normalize(xs: &mut [f32]) {
    let norm = xs.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm.max(1e-12);
        for x in xs {
            *x *= inv;
        }
    }
}

const LANES: usize = 16;

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().sum::<f32>();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum::<f32>();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            let d = x - mean;
            *a += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter().fold(tail, |m, &x| if x > m { x } else { m })
}

/// ln 2 in two parts, for an exact argument reduction in `exp` (Cephes' `expf`).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial, `e^r = 1 + r + r^2 P(r)`, highest degree first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
/// Abramowitz and Stegun 7.1.26: `erfc(a) = t P(t) e^(-a^2)` with `t = 1 / (1 + ERF_P a)`,
/// `P` highest degree first.
const ERF_P: f32 = 0.327_591_1;
const ERF_POLY: [f32; 5] = [
    1.061_405_4,
    -1.453_152,
    1.421_413_8,
    -0.284_496_72,
    0.254_829_6,
];

/// `e^x` to about 1 ulp over the range that matters here, branch-free so that it vectorises
/// (Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in `r`, `2^n` built in the exponent
/// bits). Inputs are clamped to [-87.3, 88.3], so the result is always a finite normal number.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    y * f32::from_bits(((n + 127) as u32) << 23)
}

/// GELU with erf from Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7). The formula
/// gives `erfc(|x| / sqrt 2)` directly, which also avoids cancellation for negative `x`.
#[inline(always)]
fn gelu_erf_one(x: f32) -> f32 {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + ERF_P * a);
    let mut p = ERF_POLY[0];
    for c in &ERF_POLY[1..] {
        p = p * t + c;
    }
    let erfc = t * p * exp(-a * a);
    let g = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * g
}

/// `0.5 x (1 + tanh u) = x / (1 + e^(-2u))` with `u = sqrt(2 / pi) (x + 0.044715 x^3)`.
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

#[inline(always)]
fn map_rows_with_bias(xs: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
    if bias.is_empty() {
        return;
    }
    for row in xs.chunks_exact_mut(bias.len()) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x = f(*x + b);
        }
    }
}

#[inline(always)]
fn bias_gelu_erf_impl(xs: &mut [f32], bias: &[f32]) {
    map_rows_with_bias(xs, bias, gelu_erf_one);
}

#[inline(always)]
fn bias_gelu_tanh_impl(xs: &mut [f32], bias: &[f32]) {
    map_rows_with_bias(xs, bias, gelu_tanh_one);
}

#[inline(always)]
fn bias_relu_impl(xs: &mut [f32], bias: &[f32]) {
    map_rows_with_bias(xs, bias, |x| x.max(0.0));
}

#[inline(always)]
fn layer_norm_rows_impl(
    xs: &mut [f32],
    residual: Option<&[f32]>,
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = gamma.len();
    if width == 0 {
        return;
    }
    let inv_width = 1.0 / width as f32;
    for (i, row) in xs.chunks_exact_mut(width).enumerate() {
        if let Some(residual) = residual {
            for (x, r) in row.iter_mut().zip(&residual[i * width..(i + 1) * width]) {
                *x += r;
            }
        }
        if let Some(bias) = bias {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
        let mean = sum(row) * inv_width;
        let var = sum_sq_dev(row, mean) * inv_width;
        let inv_std = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv_std * g + b;
        }
    }
}

#[inline(always)]
fn softmax_rows_impl(xs: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in xs.chunks_exact_mut(width) {
        let m = max(row);
        for x in row.iter_mut() {
            *x = exp(*x - m);
        }
        let inv = 1.0 / sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// A strided matrix inside a slice: element `(i, j)` is `data[offset + i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

/// The mutable counterpart of [`View`].
#[derive(Debug)]
pub(crate) struct ViewMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> ViewMut<'a> {
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

fn in_bounds(len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0
        || cols == 0
        || (rows - 1)
            .checked_mul(rs)
            .zip((cols - 1).checked_mul(cs))
            .and_then(|(a, b)| a.checked_add(b))
            .and_then(|last| last.checked_add(offset))
            .is_some_and(|last| last < len)
}

/// A pointer that may cross threads: [`matmul`] hands each thread a disjoint set of columns.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

// SAFETY: only used by `matmul`, whose tasks read shared inputs and write disjoint outputs.
unsafe impl Send for SharedPtr {}
// SAFETY: as above.
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    /// A method rather than field access, so closures capture the `Sync` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst = (accumulate ? dst : 0) + scale * lhs · rhs`, the columns of `dst` split into `parts`
/// ranges computed in parallel on the current rayon pool (`1`: on this thread).
///
/// Splitting columns is for thin products (a short query): gemm does not parallelise those
/// well by itself, and each part only reads its share of `rhs`, the weights.
///
/// # Panics
/// If the shapes disagree or a view reaches outside its slice: callers compute both from the
/// same dimensions, so this is a bug check guarding the unsafe calls below.
pub(crate) fn matmul(
    dst: ViewMut<'_>,
    accumulate: bool,
    lhs: View<'_>,
    rhs: View<'_>,
    scale: f32,
    parts: usize,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "matmul shapes: dst {m}x{n}, lhs {}x{}, rhs {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(in_bounds(dst.data.len(), dst.offset, m, n, dst.rs, dst.cs));
    assert!(in_bounds(lhs.data.len(), lhs.offset, m, k, lhs.rs, lhs.cs));
    assert!(in_bounds(rhs.data.len(), rhs.offset, k, n, rhs.rs, rhs.cs));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[dst.offset + i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    // Columns per part: a whole number of 16-float vectors.
    let width = n.div_ceil(parts.max(1)).next_multiple_of(16);
    let parts = n.div_ceil(width);
    // SAFETY: the offsets are inside their slices (asserted above).
    let (dst_ptr, lhs_ptr, rhs_ptr) = unsafe {
        (
            SharedPtr(dst.data.as_mut_ptr().add(dst.offset)),
            SharedPtr(lhs.data.as_ptr().add(lhs.offset).cast_mut()),
            SharedPtr(rhs.data.as_ptr().add(rhs.offset).cast_mut()),
        )
    };
    let part = |p: usize| {
        let first = p * width;
        let cols = width.min(n - first);
        // SAFETY: the asserts above keep every element of the three views inside their
        // slices, so the sub-views of columns `first..first + cols` are inside too; `dst` is
        // borrowed mutably, so it overlaps neither input; parts write disjoint columns; strides
        // fit in isize because they index within slices. gemm only reads through `lhs` and
        // `rhs` (the `cast_mut` is for the wrapper type).
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                dst_ptr.get().add(first * dst.cs),
                dst.cs as isize,
                dst.rs as isize,
                accumulate,
                lhs_ptr.get().cast_const(),
                lhs.cs as isize,
                lhs.rs as isize,
                rhs_ptr.get().add(first * rhs.cs).cast_const(),
                rhs.cs as isize,
                rhs.rs as isize,
                if accumulate { 1.0 } else { 0.0 },
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    };
    if parts == 1 {
        part(0);
    } else {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64, good to 1e-15 for |x| <= 3.
    fn erf_ref(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-4000..=4000).map(|i| i as f32 * 0.002)
    }

    #[test]
    fn exp_is_accurate() {
        for x in (-8700..=8800).map(|i| i as f32 * 0.01) {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_accurate() {
        use std::arch::x86_64::*;
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        fn exp16(xs: &[f32]) -> Vec<f32> {
            let mut out = vec![0f32; 16];
            // SAFETY: both slices hold 16 values.
            unsafe {
                let y = avx512::exp(_mm512_loadu_ps(xs.as_ptr()));
                _mm512_storeu_ps(out.as_mut_ptr(), y);
            }
            out
        }
        let xs: Vec<f32> = (-8700..8804).map(|i| i as f32 * 0.01).collect();
        for chunk in xs.chunks_exact(16) {
            // SAFETY: `isa()` saw AVX-512 on this CPU.
            let got = unsafe { exp16(chunk) };
            for (&x, &y) in chunk.iter().zip(&got) {
                let want = (x as f64).exp();
                assert!(
                    ((y as f64 - want) / want).abs() < 3e-7,
                    "exp({x}) = {y}, want {want}"
                );
            }
        }
        // SAFETY: as above.
        let extremes = unsafe {
            exp16(&[
                -1000.0, 1000.0, 0.0, -87.0, 88.0, 1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                0.0, 0.0,
            ])
        };
        assert!(extremes[0] > 0.0 && extremes[0] < 1e-37, "{}", extremes[0]);
        assert!(extremes[1].is_finite());
        assert_eq!(extremes[2], 1.0);
    }

    #[test]
    fn gelu_erf_matches_reference() {
        let xs: Vec<f32> = grid().collect();
        let mut ys = xs.clone();
        bias_gelu_erf(&mut ys, &[0.0]);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x64 = x as f64;
            let want = 0.5 * x64 * (1.0 + erf_ref(x64 / std::f64::consts::SQRT_2));
            assert!(
                (y as f64 - want).abs() < 3e-7 * (1.0 + x64.abs()),
                "gelu({x}) = {y}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_tanh_matches_reference() {
        let xs: Vec<f32> = grid().collect();
        let mut ys = xs.clone();
        bias_gelu_tanh(&mut ys, &[0.0]);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x64 = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let want = 0.5 * x64 * (1.0 + u.tanh());
            assert!(
                (y as f64 - want).abs() < 1e-6 * (1.0 + x64.abs()),
                "gelu_tanh({x})"
            );
        }
    }

    #[test]
    fn bias_is_added_per_column() {
        let mut xs = vec![-1.0, 0.0, 1.0, -2.0, 3.0, 0.5];
        bias_relu(&mut xs, &[0.5, -1.0, 0.0]);
        assert_eq!(xs, vec![0.0, 0.0, 1.0, 0.0, 2.0, 0.5]);
        let mut a = vec![0.3, -0.7, 1.1, 2.0];
        let mut b: Vec<f32> = a
            .iter()
            .zip([0.1, 0.2].iter().cycle())
            .map(|(x, y)| x + y)
            .collect();
        bias_gelu_erf(&mut a, &[0.1, 0.2]);
        bias_gelu_erf(&mut b, &[0.0]);
        assert_eq!(a, b);
    }

    #[test]
    fn every_isa_agrees_with_baseline() {
        let xs: Vec<f32> = grid().collect();
        let bias = [0.25, -0.5, 0.0];
        let mut a = xs[..7998].to_vec();
        let mut b = a.clone();
        bias_gelu_erf(&mut a, &bias);
        bias_gelu_erf_impl(&mut b, &bias);
        // The AVX-512 form uses FMAs and a reciprocal estimate: equal to a few ulps.
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 4.0 * f32::EPSILON * (1.0 + y.abs()),
                "dispatch to {} changed results: {x} vs {y}",
                isa_name()
            );
        }
        let width = 37;
        let mut a: Vec<f32> = xs[..width * 20].iter().map(|x| x * 4.0).collect();
        let mut b = a.clone();
        softmax_rows(&mut a, width);
        softmax_rows_impl(&mut b, width);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 4.0 * f32::EPSILON * y,
                "softmax: {x} vs {y}"
            );
        }
        let (width, gamma, beta) = (31, vec![1.5; 31], vec![0.5; 31]);
        let mut a = xs[..width * 40].to_vec();
        let mut b = a.clone();
        let residual = xs[width..width * 41].to_vec();
        layer_norm_rows(&mut a, Some(&residual), Some(&beta), &gamma, &beta, 1e-12);
        layer_norm_rows_impl(&mut b, Some(&residual), Some(&beta), &gamma, &beta, 1e-12);
        assert_eq!(a, b);
    }

    #[test]
    fn layer_norm_of_rows() {
        let width = 37;
        let xs: Vec<f32> = (0..width * 3)
            .map(|i| ((i * 7919) % 101) as f32 * 0.1)
            .collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 * 0.01).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 * 0.02).collect();
        let beta: Vec<f32> = (0..width).map(|i| -(i as f32) * 0.03).collect();
        let residual: Vec<f32> = xs.iter().map(|x| x * 0.5 - 1.0).collect();
        let mut ys = xs.clone();
        layer_norm_rows(&mut ys, Some(&residual), Some(&bias), &gamma, &beta, 1e-12);
        for ((x, r), y) in xs
            .chunks(width)
            .zip(residual.chunks(width))
            .zip(ys.chunks(width))
        {
            let v: Vec<f64> = x
                .iter()
                .zip(r)
                .zip(&bias)
                .map(|((a, r), b)| (a + r + b) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / width as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / width as f64;
            for j in 0..width {
                let want = (v[j] - mean) / (var + 1e-12).sqrt() * gamma[j] as f64 + beta[j] as f64;
                assert!((y[j] as f64 - want).abs() < 1e-5, "{} vs {want}", y[j]);
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let width = 19;
        let mut xs: Vec<f32> = (0..width * 4)
            .map(|i| (i % 13) as f32 * 1.7 - 9.0)
            .collect();
        xs[3] = -1e30;
        let orig = xs.clone();
        softmax_rows(&mut xs, width);
        for (x, y) in orig.chunks(width).zip(xs.chunks(width)) {
            let m = x.iter().cloned().fold(f64::MIN, |a, b| a.max(b as f64));
            let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (a, b) in x.iter().zip(y) {
                let want = (*a as f64 - m).exp() / z;
                assert!((*b as f64 - want).abs() < 1e-6);
            }
            assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn matmul_with_strides_and_accumulation() {
        // lhs 2x3, rhs given transposed (3x2 viewed from a 2x3 buffer), dst in a wider buffer.
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, 2.0, 0.5, 1.0, -1.0];
        let mut dst = vec![10.0; 2 * 4];
        matmul(
            ViewMut {
                data: &mut dst,
                offset: 1,
                rows: 2,
                cols: 2,
                rs: 4,
                cs: 1,
            },
            true,
            View::dense(&lhs, 2, 3),
            View {
                data: &rhs_t,
                offset: 0,
                rows: 3,
                cols: 2,
                rs: 1,
                cs: 3,
            },
            2.0,
            1,
        );
        // lhs · rhs = [[7, -0.5], [16, 1]]
        assert_eq!(dst, vec![10.0, 24.0, 9.0, 10.0, 10.0, 42.0, 12.0, 10.0]);
    }

    #[test]
    fn matmul_split_into_column_parts_matches() {
        let (m, n, k) = (5, 100, 70);
        let lhs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37) % 17) as f32 * 0.1 - 0.8)
            .collect();
        // rhs viewed transposed out of a n x k buffer, as attention does for K.
        let rhs_t: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53) % 23) as f32 * 0.05 - 0.5)
            .collect();
        let rhs = View {
            data: &rhs_t,
            offset: 0,
            rows: k,
            cols: n,
            rs: 1,
            cs: k,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut whole = vec![1.0; m * n];
        let mut split = vec![1.0; m * n];
        matmul(
            ViewMut::dense(&mut whole, m, n),
            true,
            View::dense(&lhs, m, k),
            rhs,
            0.5,
            1,
        );
        pool.install(|| {
            matmul(
                ViewMut::dense(&mut split, m, n),
                true,
                View::dense(&lhs, m, k),
                rhs,
                0.5,
                3,
            )
        });
        for i in 0..m {
            for j in 0..n {
                let want = 1.0
                    + 0.5
                        * (0..k)
                            .map(|t| lhs[i * k + t] * rhs_t[j * k + t])
                            .sum::<f32>();
                assert!((whole[i * n + j] - want).abs() < 1e-4);
                assert!((split[i * n + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    #[should_panic(expected = "matmul shapes")]
    fn matmul_rejects_mismatched_shapes() {
        let a = [0.0; 6];
        let mut d = [0.0; 4];
        matmul(
            ViewMut::dense(&mut d, 2, 2),
            false,
            View::dense(&a, 2, 3),
            View::dense(&a, 2, 3),
            1.0,
            1,
        );
    }

    #[test]
    fn l2_normalize_unit_and_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
