//! Which instruction set the kernels use, detected once at run time.
//!
//! Every SIMD kernel has a scalar reference beside it; [`Isa::detect`] picks the widest set
//! this CPU has, and `FRUGAL_ISA=scalar|avx2|avx512|avx512vnni|neon` forces one (for
//! benchmarks and for tests that compare paths). A forced set the CPU lacks falls back to the
//! best one it has, so a wrong setting never reaches an illegal instruction.

use std::sync::OnceLock;

/// An instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ FMA, F16C).
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`: u8×i8 dot products into i32).
    Avx512Vnni,
    /// AArch64 Advanced SIMD (always present on aarch64), with `sdot` where the CPU has it.
    Neon,
}

impl Isa {
    /// The name `FRUGAL_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `FRUGAL_ISA` value.
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::all().find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    fn all() -> impl Iterator<Item = Isa> {
        [
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512,
            Isa::Avx512Vnni,
            Isa::Neon,
        ]
        .into_iter()
    }

    /// Whether this CPU can run kernels written for `self`. The CPU is asked once; after that
    /// this is one load and a bit test, cheap enough to call for every row.
    pub fn is_available(self) -> bool {
        static MASK: OnceLock<u32> = OnceLock::new();
        let mask = *MASK.get_or_init(|| {
            Isa::all()
                .filter(|i| i.ask_cpu())
                .fold(0, |m, i| m | 1 << i as u32)
        });
        mask & (1 << self as u32) != 0
    }

    /// The CPU feature tests behind [`Isa::is_available`].
    fn ask_cpu(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.ask_cpu()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => Isa::Avx512.ask_cpu() && is_x86_feature_detected!("avx512vnni"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every set this CPU can run, scalar first: what tests compare against the reference.
    pub fn available() -> Vec<Isa> {
        Isa::all().filter(|i| i.is_available()).collect()
    }

    /// The best available set, or the one `FRUGAL_ISA` names (if available). Cached.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Isa::available().into_iter().max().unwrap_or(Isa::Scalar);
            match std::env::var("FRUGAL_ISA")
                .ok()
                .and_then(|s| Isa::from_name(&s))
            {
                Some(forced) if forced.is_available() => forced,
                _ => best,
            }
        })
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_is_always_there() {
        for isa in Isa::all() {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse9"), None);
        assert_eq!(Isa::available()[0], Isa::Scalar);
        assert!(Isa::detect().is_available());
    }
}
