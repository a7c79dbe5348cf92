//! bf16 matrix products for the linear layers: weights rounded to bf16 once at load and packed
//! for the CPU's dot-product instructions, activations rounded per product, sums kept in f32.
//!
//! Two kernels, chosen at run time ([`Kernel::detect`]):
//! - **AMX** (`tdpbf16ps` on tile registers, through inline `asm!`; Linux grants a process the
//!   tile data state on request with `arch_prctl(ARCH_REQ_XCOMP_PERM)`): 32 x 32 output blocks
//!   from four tile accumulators.
//! - **AVX-512 BF16** (`_mm512_dpbf16_ps`): 8 x 32 output blocks in 16 vector accumulators.
//!
//! Both read the same packed layout: the weight `[k, n]` is cut into panels of 16 columns; a
//! panel holds, for each pair of rows `(2p, 2p + 1)`, 16 column pairs of bf16 (64 bytes), which
//! is both one AMX B-tile row and one 512-bit `dpbf16` operand. `k` is padded with zeros to a
//! multiple of 32 (one AMX tile depth) and `n` to a multiple of 32 (two panels), so that the
//! kernels never need edge cases on the inputs; only the stores into the f32 output are masked.

use std::cell::RefCell;

/// Padding of the product depth (rows of a weight): one AMX tile of bf16 pairs.
const K_ALIGN: usize = 32;
/// Padding of the output columns: two 16-column panels, the width of both micro-kernels.
const N_ALIGN: usize = 32;
/// Padding of the activation rows: the height of the AMX micro-kernel (a multiple of the
/// AVX-512 kernel's 8).
const M_ALIGN: usize = 32;
/// Columns per panel.
const PANEL: usize = 16;

/// A bf16 kernel this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Intel AMX tiles (`amx-bf16`).
    Amx,
    /// AVX-512 BF16 dot products (`avx512bf16`).
    Avx512,
}

impl Kernel {
    /// The kernels this CPU (and, for AMX, this operating system) can run, fastest first.
    pub fn available() -> &'static [Kernel] {
        static AVAILABLE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut out = Vec::new();
            if amx_usable() {
                out.push(Kernel::Amx);
            }
            if avx512_bf16_usable() {
                out.push(Kernel::Avx512);
            }
            out
        })
    }

    /// The fastest kernel available, if any.
    pub fn detect() -> Option<Kernel> {
        Self::available().first().copied()
    }

    /// Name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx-bf16",
            Kernel::Avx512 => "avx512-bf16",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512_bf16_usable() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_bf16_usable() -> bool {
    false
}

/// AMX-BF16 and AMX-TILE in CPUID, the tile state enabled by the OS (XCR0 bits 17 and 18, which
/// `arch_prctl` checks), and permission for this process to use it. AVX-512 is needed too, for
/// the conversions and stores around the tiles.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_usable() -> bool {
    // CPUID leaf 7 exists on every x86-64 CPU that has AVX-512 (checked first).
    let leaf7 = avx512_bf16_usable().then(|| std::arch::x86_64::__cpuid_count(7, 0));
    let Some(leaf7) = leaf7 else {
        return false;
    };
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    amx_bf16 && amx_tile && request_tile_permission()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amx_usable() -> bool {
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux (5.16 on) gives a process the
/// AMX tile data state only when asked; without it the first tile instruction faults. Fails on
/// older kernels and CPUs without AMX, and then this returns false.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let ret: i64;
    // SAFETY: a plain system call that only changes this process's permitted xsave features;
    // `syscall` clobbers rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// f32 to bf16, rounding to nearest even (NaN stays NaN: the quiet bit is in the kept half).
#[inline(always)]
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// A weight matrix `[k, n]` in bf16, packed for the kernels (see the module docs).
pub(crate) struct Packed {
    k: usize,
    n: usize,
    /// `k` rounded up to [`K_ALIGN`].
    kp: usize,
    data: Vec<u16>,
}

impl Packed {
    /// Packs the row-major `[k, n]` matrix `w`.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "packed weight shape");
        let kp = k.next_multiple_of(K_ALIGN);
        let np = n.next_multiple_of(N_ALIGN);
        let panels = np / PANEL;
        let mut data = vec![0u16; panels * kp * PANEL];
        for (row, values) in w.chunks_exact(n).enumerate() {
            for (col, &v) in values.iter().enumerate() {
                data[Self::index(kp, row, col)] = to_bf16(v);
            }
        }
        Self { k, n, kp, data }
    }

    #[inline(always)]
    fn index(kp: usize, row: usize, col: usize) -> usize {
        (col / PANEL) * kp * PANEL + (row / 2) * 2 * PANEL + (col % PANEL) * 2 + row % 2
    }

    /// Rows `k0..k0 + k` and columns `n0..n0 + n`; `k0` must be a multiple of 32 and `n0` of 32
    /// (the packing's alignment).
    pub fn view(&self, k0: usize, k: usize, n0: usize, n: usize) -> PackedView<'_> {
        assert!(
            k0.is_multiple_of(K_ALIGN) && n0.is_multiple_of(N_ALIGN),
            "unaligned packed view"
        );
        assert!(
            k0 + k <= self.k && n0 + n <= self.n,
            "packed view out of range"
        );
        PackedView {
            packed: self,
            k0,
            k,
            n0,
            n,
        }
    }
}

/// Part of a [`Packed`] matrix, the right-hand side of [`matmul`].
#[derive(Clone, Copy)]
pub(crate) struct PackedView<'a> {
    packed: &'a Packed,
    k0: usize,
    k: usize,
    n0: usize,
    n: usize,
}

impl PackedView<'_> {
    pub fn rows(&self) -> usize {
        self.k
    }

    pub fn cols(&self) -> usize {
        self.n
    }

    /// Pointer to the first k-pair row of the panel holding column `col` (relative to the
    /// view), at the view's first row.
    fn panel_ptr(&self, col: usize) -> *const u16 {
        let kp = self.packed.kp;
        let offset = Self::panel_offset(kp, self.n0 + col) + self.k0 * PANEL;
        debug_assert!(offset < self.packed.data.len());
        // SAFETY: the offset is inside `data` (the view is inside the padded matrix).
        unsafe { self.packed.data.as_ptr().add(offset) }
    }

    fn panel_offset(kp: usize, col: usize) -> usize {
        (col / PANEL) * kp * PANEL
    }
}

thread_local! {
    /// Activations rounded to bf16, padded; reused across products on each thread.
    static SCRATCH: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `dst = (accumulate ? dst : 0) + a · b` with `dst` a dense row-major `[m, b.cols()]` f32
/// matrix and `a` a dense row-major `[m, b.rows()]` f32 matrix (rounded to bf16 here). The
/// output columns are split into `parts` ranges computed in parallel on the current rayon pool.
///
/// # Panics
/// If the shapes disagree, or `kernel` is not available on this CPU (a bug: callers take it
/// from [`Kernel::available`]).
pub(crate) fn matmul(
    kernel: Kernel,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    b: PackedView<'_>,
    parts: usize,
) {
    assert!(
        Kernel::available().contains(&kernel),
        "bf16 kernel {kernel:?} is not available on this CPU"
    );
    let (k, n) = (b.rows(), b.cols());
    assert!(k > 0 && n > 0, "bf16 matmul of an empty weight");
    let m = a.len() / k;
    assert!(
        a.len() == m * k && dst.len() == m * n,
        "bf16 matmul shapes: dst {} values, a {} values, b {k}x{n}",
        dst.len(),
        a.len()
    );
    if m == 0 {
        return;
    }
    // Taken, not borrowed: a rayon task stolen while this one waits may run another product on
    // this thread, and it then just allocates its own buffer.
    let mut scratch = SCRATCH.take();
    {
        let scratch = &mut scratch;
        let lda = k.next_multiple_of(K_ALIGN);
        let mp = m.next_multiple_of(M_ALIGN);
        scratch.clear();
        scratch.resize(mp * lda, 0);
        convert(a, m, k, lda, scratch);
        let a_bf: &[u16] = scratch;
        let groups = n.div_ceil(N_ALIGN);
        let per_part = groups.div_ceil(parts.max(1));
        let parts = groups.div_ceil(per_part);
        let out = SendPtr(dst.as_mut_ptr());
        let run = |p: usize| {
            let g0 = p * per_part;
            let g1 = (g0 + per_part).min(groups);
            let job = Job {
                a: a_bf.as_ptr(),
                lda,
                m,
                b,
                dst: out.get(),
                n,
                accumulate,
                col0: g0 * N_ALIGN,
                col1: (g1 * N_ALIGN).min(n),
            };
            // SAFETY: `kernel` is available (asserted); the job's pointers cover the checked
            // shapes; parts write disjoint column ranges of `dst`, which is borrowed mutably.
            unsafe {
                match kernel {
                    Kernel::Amx => amx::run(&job),
                    Kernel::Avx512 => avx512::run(&job),
                }
            }
        };
        if parts <= 1 {
            run(0);
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(run);
        }
    }
    SCRATCH.set(scratch);
}

/// Rounds the `[m, k]` matrix `a` into the zero-padded `[mp, lda]` bf16 buffer `out`.
fn convert(a: &[f32], m: usize, k: usize, lda: usize, out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
        fn wide(a: &[f32], m: usize, k: usize, lda: usize, out: &mut [u16]) {
            convert_impl(a, m, k, lda, out);
        }
        if avx512_bf16_usable() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { wide(a, m, k, lda, out) };
        }
    }
    convert_impl(a, m, k, lda, out);
}

#[inline(always)]
fn convert_impl(a: &[f32], m: usize, k: usize, lda: usize, out: &mut [u16]) {
    for (src, dst) in a.chunks_exact(k).zip(out.chunks_exact_mut(lda)).take(m) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = to_bf16(s);
        }
    }
}

/// One thread's share of a product: output columns `col0..col1` (multiples of 32 but the last)
/// of all rows.
struct Job<'a> {
    /// bf16 activations, `[mp, lda]`, zero-padded.
    a: *const u16,
    lda: usize,
    m: usize,
    b: PackedView<'a>,
    /// f32 output, `[m, n]` dense.
    dst: *mut f32,
    n: usize,
    accumulate: bool,
    col0: usize,
    col1: usize,
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: each task of `matmul` writes its own columns through the pointer.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Job, PANEL};

    /// Rows of the micro-kernel: 8 rows x 2 panels = 16 accumulators.
    const MR: usize = 8;

    /// # Safety
    /// The CPU has AVX-512 F/BW and BF16; `job` describes valid buffers (its rows padded to a
    /// multiple of 8 with zeros).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    pub(super) unsafe fn run(job: &Job<'_>) {
        let pairs = job.lda / 2;
        let depth = job.b.rows().div_ceil(2);
        let mut j = job.col0;
        while j < job.col1 {
            let b0 = job.b.panel_ptr(j).cast::<i32>();
            let b1 = job.b.panel_ptr(j + PANEL).cast::<i32>();
            let mut i = 0;
            while i < job.m {
                let mut acc = [[_mm512_setzero_ps(); 2]; MR];
                // SAFETY: rows i..i + 8 are inside the padded activations, pairs 0..depth inside
                // each row (depth <= lda / 2) and inside both panels (see `PackedView`).
                unsafe {
                    let a = job.a.add(i * job.lda).cast::<i32>();
                    for p in 0..depth {
                        let w0: __m512bh =
                            std::mem::transmute(_mm512_loadu_si512(b0.add(p * PANEL).cast()));
                        let w1: __m512bh =
                            std::mem::transmute(_mm512_loadu_si512(b1.add(p * PANEL).cast()));
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                                a.add(r * pairs + p).read_unaligned(),
                            ));
                            acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                            acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(job.m - i) {
                        store_row(job, i + r, j, acc);
                    }
                }
                i += MR;
            }
            j += 2 * PANEL;
        }
    }

    /// Adds or writes 32 values (fewer at the right edge) into row `row` at column `col`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `row < job.m`, `col < job.n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn store_row(job: &Job<'_>, row: usize, col: usize, acc: &[__m512; 2]) {
        for (h, &v) in acc.iter().enumerate() {
            let c = col + h * PANEL;
            if c >= job.n {
                break;
            }
            let valid = (job.n - c).min(PANEL);
            let mask: __mmask16 = if valid == PANEL {
                0xffff
            } else {
                (1u16 << valid) - 1
            };
            // SAFETY: the masked lanes are columns c..c + valid of row `row`, inside `dst`.
            unsafe {
                let ptr = job.dst.add(row * job.n + c);
                let v = if job.accumulate {
                    _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, ptr))
                } else {
                    v
                };
                _mm512_mask_storeu_ps(ptr, mask, v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::x86_64::*;

    use super::{Job, PANEL};

    /// `ldtilecfg` operand: palette 1, tiles 0-7 of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn new() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                c[48 + t] = 16;
            }
            Self(c)
        }
    }

    /// Four 16 x 16 f32 tiles of a 32 x 32 output block, as `tilestored` writes them.
    #[repr(C, align(64))]
    struct Block([f32; 32 * 32]);

    /// # Safety
    /// The CPU has AMX-BF16 and AVX-512, this process may use tile data
    /// (`request_tile_permission`); `job` describes valid buffers (rows padded to a multiple of
    /// 32 with zeros).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn run(job: &Job<'_>) {
        let config = TileConfig::new();
        // SAFETY: a valid palette-1 configuration; AMX is usable (the caller's contract).
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        }
        let lda_bytes = job.lda * 2;
        let steps = job.b.rows().div_ceil(32);
        let mut c = Block([0f32; 32 * 32]);
        let mut j = job.col0;
        while j < job.col1 {
            let b0 = job.b.panel_ptr(j);
            let b1 = job.b.panel_ptr(j + PANEL);
            let mut i = 0;
            while i < job.m {
                // SAFETY: rows i..i + 32 are inside the padded activations and each of the
                // `steps` 64-byte columns of A inside a row (steps * 32 <= lda); each step
                // reads 16 k-pair rows (1 KiB) of both panels, inside the padded weight
                // (see `PackedView`); the tiles store into `c`, 32 rows of 128 bytes.
                unsafe {
                    let a0 = job.a.add(i * job.lda);
                    let a1 = job.a.add((i + 16) * job.lda);
                    // tmm0..3: C (rows 0-15 x cols 0-15, 0-15 x 16-31, 16-31 x 0-15,
                    // 16-31 x 16-31), tmm4/5: A rows 0-15 / 16-31, tmm6/7: B panels 0 / 1;
                    // each step is 32 of k.
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        "2:",
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {ldb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        "add {a0}, 64",
                        "add {a1}, 64",
                        "add {b0}, 1024",
                        "add {b1}, 1024",
                        "dec {steps}",
                        "jnz 2b",
                        "tilestored [{c} + {ldc}*1], tmm0",
                        "tilestored [{c} + {ldc}*1 + 64], tmm1",
                        "tilestored [{c2} + {ldc}*1], tmm2",
                        "tilestored [{c2} + {ldc}*1 + 64], tmm3",
                        a0 = inout(reg) a0 => _,
                        a1 = inout(reg) a1 => _,
                        b0 = inout(reg) b0 => _,
                        b1 = inout(reg) b1 => _,
                        steps = inout(reg) steps => _,
                        lda = in(reg) lda_bytes,
                        ldb = in(reg) 64usize,
                        c = in(reg) c.0.as_mut_ptr(),
                        c2 = in(reg) c.0.as_mut_ptr().add(16 * 32),
                        ldc = in(reg) 128usize,
                        options(nostack),
                    );
                    for r in 0..32.min(job.m - i) {
                        let row = c.0.as_ptr().add(r * 32);
                        let acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(PANEL))];
                        super::avx512::store_row(job, i + r, j, &acc);
                    }
                }
                i += 32;
            }
            j += 2 * PANEL;
        }
        // SAFETY: back to the initial tile state, so that context switches save no tile data.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) unsafe fn run(_: &super::Job<'_>) {
        unreachable!("no bf16 kernel off x86-64")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod amx {
    pub(super) unsafe fn run(_: &super::Job<'_>) {
        unreachable!("no bf16 kernel off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let r = |x: f32| f32::from_bits((to_bf16(x) as u32) << 16) as f64;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| r(a[i * k + t]) * r(w[t * n + j]))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * 0.7)
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: rounds to the even one, 1.0.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }

    /// Every kernel this CPU has, on shapes with every kind of edge, with and without
    /// accumulation, whole and split into parts, on views of a larger packed matrix.
    #[test]
    fn every_available_kernel_matches_the_reference() {
        let kernels = Kernel::available();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has neither AMX-BF16 nor AVX-512 BF16");
            return;
        }
        for &kernel in [Kernel::Amx, Kernel::Avx512].iter() {
            if !kernels.contains(&kernel) {
                eprintln!("skipped {kernel:?}: not available on this CPU");
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for &kernel in kernels {
            for (m, k, n) in [
                (1, 1, 1),
                (5, 70, 100),
                (33, 64, 32),
                (40, 384, 1152),
                (17, 33, 47),
            ] {
                let a = data(m * k, 1);
                let (kk, nn) = (k + 64, n + 64);
                let w = data(kk * nn, 2);
                let packed = Packed::new(&w, kk, nn);
                // The view at rows 32.., columns 32.. of the packed matrix.
                let sub: Vec<f32> = (0..k)
                    .flat_map(|r| w[(r + 32) * nn + 32..(r + 32) * nn + 32 + n].to_vec())
                    .collect();
                let want = reference(&a, &sub, m, k, n);
                for (accumulate, parts) in [(false, 1), (true, 3)] {
                    let mut dst = vec![if accumulate { 1.0 } else { f32::NAN }; m * n];
                    pool.install(|| {
                        matmul(
                            kernel,
                            &mut dst,
                            accumulate,
                            &a,
                            packed.view(32, k, 32, n),
                            parts,
                        )
                    });
                    for (i, (&got, &want)) in dst.iter().zip(&want).enumerate() {
                        let want = want + if accumulate { 1.0 } else { 0.0 };
                        assert!(
                            (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                            "{kernel:?} {m}x{k}x{n} at {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
