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
//! Every bf16 buffer is made of 64-byte-aligned [`Line`]s, so that each tile row is one cache
//! line (the encoder aligns its f32 activations the same way): on the allocator's 16-byte
//! alignment the AMX kernel ran at half speed.
//!
//! On AMX, attention runs on the same kernel ([`attention`]): per head, `Q Kᵀ` with K packed as
//! a weight and `P V` with V packed as one, the softmax between them in f32.

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

/// 64 bytes of bf16 values, aligned to a cache line: the unit of the kernels' buffers, so that
/// each 64-byte tile row is one cache line. Misaligned by 16 bytes, as large `Vec`s from the
/// allocator are, every tile row spans two lines and AMX products ran at half speed (650
/// against 1,200 GFLOP/s on one thread for a 464 x 384 x 1152 product).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// A bf16 buffer of whole [`Line`]s.
#[derive(Default)]
pub(crate) struct Lines(Vec<Line>);

impl Lines {
    /// `len` zeros (rounded up to whole lines).
    fn zeros(len: usize) -> Self {
        let mut lines = Self::default();
        lines.fill_zeros(len);
        lines
    }

    /// Resizes to `len` values (rounded up to whole lines), all zero; keeps the allocation.
    fn fill_zeros(&mut self, len: usize) {
        self.0.clear();
        self.0.resize(len.div_ceil(32), Line([0; 32]));
    }

    /// Resizes to `len` values (rounded up to whole lines): those it had stay, new ones are
    /// zero.
    fn resize(&mut self, len: usize) {
        self.0.resize(len.div_ceil(32), Line([0; 32]));
    }

    fn as_slice(&self) -> &[u16] {
        // SAFETY: `Line` is 32 u16 with no padding (size 64 = align 64).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 32) }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 32) }
    }
}

/// A weight matrix `[k, n]` in bf16, packed for the kernels (see the module docs).
pub(crate) struct Packed {
    k: usize,
    n: usize,
    /// `k` rounded up to [`K_ALIGN`].
    kp: usize,
    data: Lines,
}

impl Packed {
    /// Packs the row-major `[k, n]` matrix `w`.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "packed weight shape");
        let kp = k.next_multiple_of(K_ALIGN);
        let np = n.next_multiple_of(N_ALIGN);
        let panels = np / PANEL;
        let mut data = Lines::zeros(panels * kp * PANEL);
        let out = data.as_mut_slice();
        for (row, values) in w.chunks_exact(n).enumerate() {
            for (col, &v) in values.iter().enumerate() {
                out[Self::index(kp, row, col)] = to_bf16(v);
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
        let data = self.packed.data.as_slice();
        debug_assert!(offset < data.len());
        // SAFETY: the offset is inside `data` (the view is inside the padded matrix).
        unsafe { data.as_ptr().add(offset) }
    }

    fn panel_offset(kp: usize, col: usize) -> usize {
        (col / PANEL) * kp * PANEL
    }
}

thread_local! {
    /// Activations rounded to bf16, padded; reused across products on each thread.
    static SCRATCH: RefCell<Lines> = const { RefCell::new(Lines(Vec::new())) };
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
        // `convert` writes every value, padding included: no zeroing first.
        scratch.resize(mp * lda);
        convert(a, m, k, lda, scratch.as_mut_slice());
        let a_bf: &[u16] = scratch.as_slice();
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

/// Rounds the `[m, k]` matrix `a` into the `[out.len() / lda, lda]` bf16 buffer `out`, and
/// writes zeros to the rest of it (columns `k..lda`, rows from `m`).
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
    let mut rows = a.chunks_exact(k).take(m);
    for dst in out.chunks_exact_mut(lda) {
        let (values, padding) = dst.split_at_mut(k);
        match rows.next() {
            Some(src) => {
                for (d, &s) in values.iter_mut().zip(src) {
                    *d = to_bf16(s);
                }
            }
            None => values.fill(0),
        }
        padding.fill(0);
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
            let mask = crate::kernels::avx512::lanes(valid);
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
        // Row blocks outside, column blocks inside: a row block of A (32 rows of k bf16, 24 KiB
        // for k = 384) stays in L1 while the weight panels, contiguous 1 KiB tiles, stream
        // from L2; the other order reloaded A's strided rows from L2 for every column block,
        // and its tile loads stalled the products (467-503 against 600-690 GFLOP/s on one
        // thread for the encoder's shapes).
        let mut i = 0;
        while i < job.m {
            let mut j = job.col0;
            while j < job.col1 {
                let b0 = job.b.panel_ptr(j);
                let b1 = job.b.panel_ptr(j + PANEL);
                // A whole 32 x 32 block inside `dst`: the tiles load (to accumulate) and store
                // it in place; at an edge they go through `c` and masked stores.
                let whole = i + 32 <= job.m && j + 32 <= job.n;
                let ldd = job.n * 4;
                // SAFETY: rows i..i + 32 are inside the padded activations and each of the
                // `steps` 64-byte columns of A inside a row (steps * 32 <= lda); each step
                // reads 16 k-pair rows (1 KiB) of both panels, inside the padded weight
                // (see `PackedView`); the tiles load from and store into `dst` (rows i..i + 32,
                // columns j..j + 32, inside it for a whole block) or store into `c`, 32 rows of
                // 128 bytes.
                unsafe {
                    let a0 = job.a.add(i * job.lda);
                    let a1 = job.a.add((i + 16) * job.lda);
                    // Dereferenced only for a whole block, which is inside `dst`.
                    let d0 = job.dst.wrapping_add(i * job.n + j);
                    let d2 = job.dst.wrapping_add((i + 16) * job.n + j);
                    if whole && job.accumulate {
                        std::arch::asm!(
                            "tileloadd tmm0, [{d0} + {ldd}*1]",
                            "tileloadd tmm1, [{d0} + {ldd}*1 + 64]",
                            "tileloadd tmm2, [{d2} + {ldd}*1]",
                            "tileloadd tmm3, [{d2} + {ldd}*1 + 64]",
                            d0 = in(reg) d0,
                            d2 = in(reg) d2,
                            ldd = in(reg) ldd,
                            options(nostack, readonly),
                        );
                    } else {
                        std::arch::asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            "tilezero tmm3",
                            options(nostack, nomem),
                        );
                    }
                    // tmm0..3: C (rows 0-15 x cols 0-15, 0-15 x 16-31, 16-31 x 0-15,
                    // 16-31 x 16-31), tmm4/5: A rows 0-15 / 16-31, tmm6/7: B panels 0 / 1;
                    // each step is 32 of k.
                    std::arch::asm!(
                        // Software-pipelined: each operand tile is reloaded for the next
                        // step right after its last product of this one, so the loads run
                        // under the remaining products instead of in front of them (tiles
                        // are not renamed: a load waits for every product reading its tile).
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {ldb}*1]",
                        "tileloadd tmm7, [{b1} + {ldb}*1]",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "dec {steps}",
                        "jz 3f",
                        "2:",
                        "add {a0}, 64",
                        "add {a1}, 64",
                        "add {b0}, 1024",
                        "add {b1}, 1024",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tileloadd tmm6, [{b0} + {ldb}*1]",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tileloadd tmm7, [{b1} + {ldb}*1]",
                        "dec {steps}",
                        "jnz 2b",
                        "3:",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = inout(reg) a0 => _,
                        a1 = inout(reg) a1 => _,
                        b0 = inout(reg) b0 => _,
                        b1 = inout(reg) b1 => _,
                        steps = inout(reg) steps => _,
                        lda = in(reg) lda_bytes,
                        ldb = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                    let (c0, c2, ldc) = if whole {
                        (d0, d2, ldd)
                    } else {
                        (c.0.as_mut_ptr(), c.0.as_mut_ptr().add(16 * 32), 128)
                    };
                    std::arch::asm!(
                        "tilestored [{c0} + {ldc}*1], tmm0",
                        "tilestored [{c0} + {ldc}*1 + 64], tmm1",
                        "tilestored [{c2} + {ldc}*1], tmm2",
                        "tilestored [{c2} + {ldc}*1 + 64], tmm3",
                        c0 = in(reg) c0,
                        c2 = in(reg) c2,
                        ldc = in(reg) ldc,
                        options(nostack),
                    );
                    if !whole {
                        for r in 0..32.min(job.m - i) {
                            let row = c.0.as_ptr().add(r * 32);
                            let acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(PANEL))];
                            super::avx512::store_row(job, i + r, j, &acc);
                        }
                    }
                }
                j += 2 * PANEL;
            }
            i += 32;
        }
        // SAFETY: back to the initial tile state, so that context switches save no tile data.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// Rounds 16 f32 lanes to bf16, to nearest even (as `to_bf16`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    fn round16(x: __m512) -> __m256i {
        let bits = _mm512_castps_si512(x);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
        _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(rounded))
    }

    /// See [`super::attention`]. Both products of a head run on [`run`]: `Q Kᵀ` with K packed
    /// as a weight of `d` rows and `len` columns, `P V` with V packed as one of `len` rows and
    /// `d` columns.
    ///
    /// # Safety
    /// AMX and AVX-512 are usable (as for `run`); `rows` is `[len, 3 heads d]`, `out`
    /// `[len, heads d]`, `d` a multiple of 32, `len > 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn attention(
        s: &mut super::AttentionScratch,
        rows: &[f32],
        out: &mut [f32],
        len: usize,
        heads: usize,
        d: usize,
        scale: f32,
    ) {
        use super::{Job, Packed};
        use crate::kernels::avx512::{exp_shifted, lanes};
        let h = heads * d;
        let width = 3 * h;
        // Rows (queries) padded to the kernel's 32, keys (the depth of P V) to a tile's 32.
        let lk = len.next_multiple_of(32);
        s.q.fill_zeros(lk * d);
        s.p.fill_zeros(lk * lk);
        let mut k = Packed {
            k: d,
            n: len,
            kp: d,
            data: std::mem::take(&mut s.k),
        };
        k.data.fill_zeros(lk * d);
        let mut v = Packed {
            k: len,
            n: d,
            kp: lk,
            data: std::mem::take(&mut s.v),
        };
        v.data.fill_zeros(lk * d);
        // Written whole by each product (no accumulation): only their length matters.
        s.scores.resize(len * len);
        s.ctx.resize(len * d);
        let scale = _mm512_set1_ps(scale);
        for head in 0..heads {
            let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
            let (qs, ks, vs) = (
                s.q.as_mut_slice(),
                k.data.as_mut_slice(),
                v.data.as_mut_slice(),
            );
            for (t, row) in rows.chunks_exact(width).enumerate() {
                for c in (0..d).step_by(16) {
                    // SAFETY: columns c..c + 16 of the head are inside the row (d % 32 == 0);
                    // the writes are at `Packed::index` of rows and columns inside `k` and `v`,
                    // and inside row t of `q`.
                    unsafe {
                        let q = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(qo + c)), scale);
                        _mm256_storeu_si256(qs.as_mut_ptr().add(t * d + c).cast(), round16(q));
                        // Key t, dims c..c + 16: eight (dim pair, key) entries of K's panel.
                        let pairs: [u32; 8] =
                            std::mem::transmute(round16(_mm512_loadu_ps(row.as_ptr().add(ko + c))));
                        for (i, pair) in pairs.iter().enumerate() {
                            let at = Packed::index(d, c + 2 * i, t);
                            ks.as_mut_ptr().add(at).cast::<u32>().write_unaligned(*pair);
                        }
                        // Value row t, dims c..c + 16.
                        let values: [u16; 16] =
                            std::mem::transmute(round16(_mm512_loadu_ps(row.as_ptr().add(vo + c))));
                        for (i, x) in values.iter().enumerate() {
                            *vs.get_unchecked_mut(Packed::index(lk, t, c + i)) = *x;
                        }
                    }
                }
            }
            let job = Job {
                a: s.q.as_slice().as_ptr(),
                lda: d,
                m: len,
                b: k.view(0, d, 0, len),
                dst: s.scores.as_mut_ptr(),
                n: len,
                accumulate: false,
                col0: 0,
                col1: len,
            };
            // SAFETY: `q` holds lk (>= len rounded to 32) zero-padded rows of d; `scores`
            // is [len, len].
            unsafe { run(&job) };
            let probabilities = s.p.as_mut_slice().chunks_exact_mut(lk);
            for (scores, p) in s.scores.chunks_exact_mut(len).zip(probabilities) {
                // SAFETY: AVX-512 is usable (the caller's contract).
                let inv = _mm512_set1_ps(1.0 / unsafe { exp_shifted(scores) });
                for j in (0..len).step_by(16) {
                    let mask = lanes(len - j);
                    // SAFETY: the masked lanes are inside `scores` (len values) and `p` (lk).
                    unsafe {
                        let x = _mm512_maskz_loadu_ps(mask, scores.as_ptr().add(j));
                        let b = round16(_mm512_mul_ps(x, inv));
                        _mm256_mask_storeu_epi16(p.as_mut_ptr().add(j).cast(), mask, b);
                    }
                }
            }
            let job = Job {
                a: s.p.as_slice().as_ptr(),
                lda: lk,
                m: len,
                b: v.view(0, len, 0, d),
                dst: s.ctx.as_mut_ptr(),
                n: d,
                accumulate: false,
                col0: 0,
                col1: d,
            };
            // SAFETY: `p` holds lk zero-padded rows of lk (keys past len are zero); `ctx` is
            // [len, d].
            unsafe { run(&job) };
            for (o, c) in out.chunks_exact_mut(h).zip(s.ctx.chunks_exact(d)) {
                o[head * d..(head + 1) * d].copy_from_slice(c);
            }
        }
        s.k = k.data;
        s.v = v.data;
    }
}

/// Whether [`attention`] takes heads of `head_dim` values on `kernel`: AMX, and heads a whole
/// number of tile depths (32 bf16) wide.
pub(crate) fn attention_supported(kernel: Kernel, head_dim: usize) -> bool {
    kernel == Kernel::Amx && head_dim > 0 && head_dim.is_multiple_of(K_ALIGN)
}

thread_local! {
    /// Buffers of [`attention`], reused across sequences on each thread.
    static ATTENTION: RefCell<AttentionScratch> = RefCell::new(AttentionScratch::default());
}

#[derive(Default)]
struct AttentionScratch {
    q: Lines,
    k: Lines,
    v: Lines,
    p: Lines,
    scores: crate::kernels::AlignedF32,
    ctx: crate::kernels::AlignedF32,
}

/// Self-attention of one sequence on AMX tiles: for each head, `softmax(Q Kᵀ · scale) V` with
/// Q, K, V and the probabilities rounded to bf16 and sums kept in f32 (as the linear layers
/// are), the softmax in f32 between the two products. `rows` is the sequence's `[len, 3 h]`
/// query-key-value rows (bias added), `out` its `[len, h]` context rows. Both products run on
/// the linear layers' AMX kernel, K and V packed per head as its weights are.
///
/// # Panics
/// If `attention_supported(kernel, head_dim)` is false or the shapes disagree.
pub(crate) fn attention(
    kernel: Kernel,
    rows: &[f32],
    out: &mut [f32],
    heads: usize,
    head_dim: usize,
    scale: f32,
) {
    assert!(
        attention_supported(kernel, head_dim) && Kernel::available().contains(&kernel),
        "AMX attention is not available for heads of {head_dim}"
    );
    let (d, h) = (head_dim, heads * head_dim);
    let width = 3 * h;
    let len = rows.len() / width;
    assert!(
        rows.len() == len * width && out.len() == len * h,
        "attention shapes"
    );
    if len == 0 {
        return;
    }
    let mut scratch = ATTENTION.take();
    // SAFETY: AMX is available (asserted), the shapes are checked, `len > 0`, and `d` is a
    // multiple of 32 (`attention_supported`); `amx::attention` sizes its buffers for them.
    unsafe { amx::attention(&mut scratch, rows, out, len, heads, d, scale) };
    ATTENTION.set(scratch);
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

    pub(super) unsafe fn attention(
        _: &mut super::AttentionScratch,
        _: &[f32],
        _: &mut [f32],
        _: usize,
        _: usize,
        _: usize,
        _: f32,
    ) {
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

    /// `softmax(Q Kᵀ · scale) V` per head in f64, from `[len, 3 heads d]` rows.
    fn attention_reference(rows: &[f32], heads: usize, d: usize, scale: f32) -> Vec<f32> {
        let h = heads * d;
        let len = rows.len() / (3 * h);
        let at = |t: usize, part: usize, head: usize, i: usize| {
            rows[t * 3 * h + part * h + head * d + i] as f64
        };
        let mut out = vec![0f32; len * h];
        for head in 0..heads {
            for q in 0..len {
                let scores: Vec<f64> = (0..len)
                    .map(|k| {
                        (0..d)
                            .map(|i| at(q, 0, head, i) * at(k, 1, head, i))
                            .sum::<f64>()
                    })
                    .map(|x| x * scale as f64)
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..d {
                    let v: f64 = (0..len).map(|k| e[k] / z * at(k, 2, head, i)).sum();
                    out[q * h + head * d + i] = v as f32;
                }
            }
        }
        out
    }

    /// AMX attention against f64, on lengths around the tile sizes and two head widths.
    #[test]
    fn amx_attention_matches_the_reference() {
        if !Kernel::available().contains(&Kernel::Amx) {
            eprintln!("skipped: this CPU (or kernel) has no usable AMX");
            return;
        }
        assert!(!attention_supported(Kernel::Amx, 48));
        assert!(!attention_supported(Kernel::Avx512, 32));
        for (len, heads, d) in [
            (1, 2, 32),
            (5, 3, 32),
            (16, 2, 32),
            (33, 2, 64),
            (70, 12, 32),
        ] {
            let rows: Vec<f32> = data(len * 3 * heads * d, len)
                .into_iter()
                .map(|x| x * 2.0)
                .collect();
            let scale = 1.0 / (d as f32).sqrt();
            let want = attention_reference(&rows, heads, d, scale);
            let mut got = vec![f32::NAN; len * heads * d];
            attention(Kernel::Amx, &rows, &mut got, heads, d, scale);
            // Twice: buffers reused from the first call must not leak into the second.
            attention(Kernel::Amx, &rows, &mut got, heads, d, scale);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 2e-2, "len {len} d {d} at {i}: {g} vs {w}");
            }
        }
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
