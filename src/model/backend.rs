//! Which kernels run the model: ONNX Runtime's own CPU kernels in fp32, or OpenVINO's in fp32
//! or bf16, and which ONNX Runtime library provides them.
//!
//! `auto` (the default for both `model.execution_provider` and `model.precision`) picks bf16
//! through OpenVINO where the CPU computes bf16 natively (AMX or AVX512-BF16) and the
//! onnxruntime-openvino library is installed: that is what OpenVINO itself does by default on
//! such CPUs, and it runs 1.5-3.5x fp32. Anywhere else it picks what kadr always ran: ONNX
//! Runtime's CPU kernels in fp32, the reference-exact path. The choice is a pure function of the
//! configuration, the CPU and the installed libraries ([`plan`]); the runtime then checks that the
//! provider really loads and, for `auto`, falls back to fp32 on the CPU kernels if it does not.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `model.execution_provider`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// OpenVINO where it pays (bf16 on a CPU with bf16), ONNX Runtime's CPU kernels otherwise.
    #[default]
    Auto,
    /// ONNX Runtime's own CPU kernels (fp32 only).
    Cpu,
    /// OpenVINO's CPU plugin (needs the onnxruntime-openvino library).
    Openvino,
}

/// `model.precision`: what the model's arithmetic runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the CPU has it and OpenVINO loads, fp32 otherwise.
    #[default]
    Auto,
    /// The reference's arithmetic: conformance tests and `kadr detect` results match it.
    Fp32,
    /// bfloat16 (8-bit mantissa) through OpenVINO: much faster on CPUs with AMX or
    /// AVX512-BF16, and close to fp32 but not equal.
    Bf16,
}

/// What was chosen: both concrete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Openvino,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arithmetic {
    Fp32,
    Bf16,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Openvino => "openvino",
        })
    }
}

impl fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arithmetic::Fp32 => "fp32",
            Arithmetic::Bf16 => "bf16",
        })
    }
}

/// What the CPU can do that matters here, from `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: String,
    pub amx_bf16: bool,
    pub avx512_bf16: bool,
}

/// Replaces the CPU flags read from `/proc/cpuinfo` (space-separated), so a test or an operator
/// can see what `auto` does on another CPU: `KADR_CPU_FLAGS=""` is a CPU without bf16.
pub const CPU_FLAGS_ENV: &str = "KADR_CPU_FLAGS";

impl CpuInfo {
    pub fn detect() -> Self {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mut info = Self::parse(&text);
        if let Ok(flags) = std::env::var(CPU_FLAGS_ENV) {
            let model = std::mem::take(&mut info.model);
            info = Self::parse(&format!("flags : {flags}\n"));
            info.model = model;
        }
        info
    }

    /// Read the first processor's model name and flags.
    pub fn parse(cpuinfo: &str) -> Self {
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        Self {
            model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            amx_bf16: has("amx_bf16"),
            avx512_bf16: has("avx512_bf16"),
        }
    }

    /// The CPU computes bf16 natively.
    pub fn has_bf16(&self) -> bool {
        self.amx_bf16 || self.avx512_bf16
    }

    fn bf16_name(&self) -> &'static str {
        if self.amx_bf16 {
            "AMX"
        } else {
            "AVX512-BF16"
        }
    }
}

/// The backend to try, and what to do if it does not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub provider: Provider,
    pub precision: Arithmetic,
    /// The ONNX Runtime library to load (`None`: the default search, `.deps/onnxruntime/`).
    pub library: Option<PathBuf>,
    /// `auto` chose OpenVINO: if it does not load, run fp32 on ONNX Runtime's CPU kernels.
    pub fallback_to_cpu: bool,
    /// Why, for the log.
    pub reason: String,
}

/// A combination refused whatever the machine: `bf16` on ONNX Runtime's CPU kernels, which
/// compute fp32 only. Config validation and [`plan`] both ask here.
pub fn impossible(provider: ExecutionProvider, precision: Precision) -> Option<&'static str> {
    (provider == ExecutionProvider::Cpu && precision == Precision::Bf16).then_some(
        "precision \"bf16\" needs execution_provider \"openvino\" or \"auto\": ONNX Runtime's CPU kernels compute fp32 only",
    )
}

/// Choose a backend. `openvino_library` is the onnxruntime-openvino library if installed
/// (`.deps/onnxruntime-openvino/`); `explicit_library` is `model.onnxruntime_library`.
pub fn plan(
    provider: ExecutionProvider,
    precision: Precision,
    cpu: &CpuInfo,
    explicit_library: Option<&Path>,
    openvino_library: Option<&Path>,
) -> Result<Plan, String> {
    use ExecutionProvider as Ep;
    let openvino_lib = explicit_library.or(openvino_library).map(Path::to_path_buf);
    let cpu_lib = explicit_library.map(Path::to_path_buf);
    let openvino = |precision: Arithmetic, fallback: bool, reason: String| Plan {
        provider: Provider::Openvino,
        precision,
        library: openvino_lib.clone(),
        fallback_to_cpu: fallback,
        reason,
    };
    let cpu_fp32 = |reason: String| Plan {
        provider: Provider::Cpu,
        precision: Arithmetic::Fp32,
        library: cpu_lib.clone(),
        fallback_to_cpu: false,
        reason,
    };
    let no_openvino = "the onnxruntime-openvino library is not installed (scripts/setup.sh puts it in .deps/onnxruntime-openvino/; or set model.onnxruntime_library)";
    if let Some(why) = impossible(provider, precision) {
        return Err(why.into());
    }
    Ok(match (provider, precision) {
        (Ep::Cpu, _) => cpu_fp32("execution_provider = \"cpu\"".into()),
        (Ep::Auto, Precision::Fp32) => {
            cpu_fp32("precision = \"fp32\": the reference-exact path".into())
        }
        (Ep::Openvino | Ep::Auto, Precision::Bf16) => {
            if openvino_lib.is_none() {
                return Err(format!(
                    "precision \"bf16\" needs OpenVINO, and {no_openvino}"
                ));
            }
            openvino(Arithmetic::Bf16, false, "precision = \"bf16\"".into())
        }
        (Ep::Openvino, _) if openvino_lib.is_none() => {
            return Err(format!(
                "execution_provider \"openvino\" needs {no_openvino}"
            ))
        }
        (Ep::Openvino, Precision::Fp32) => openvino(
            Arithmetic::Fp32,
            false,
            "execution_provider = \"openvino\", precision = \"fp32\"".into(),
        ),
        (Ep::Openvino, Precision::Auto) => {
            if cpu.has_bf16() {
                openvino(
                    Arithmetic::Bf16,
                    false,
                    format!("the CPU has {}", cpu.bf16_name()),
                )
            } else {
                openvino(
                    Arithmetic::Fp32,
                    false,
                    "the CPU has no bf16 (AMX or AVX512-BF16)".into(),
                )
            }
        }
        (Ep::Auto, Precision::Auto) => {
            if !cpu.has_bf16() {
                cpu_fp32(
                    "the CPU has no bf16 (AMX or AVX512-BF16): fp32 on ONNX Runtime's CPU kernels"
                        .into(),
                )
            } else if openvino_lib.is_none() {
                cpu_fp32(format!("the CPU has {} but {no_openvino}", cpu.bf16_name()))
            } else {
                openvino(
                    Arithmetic::Bf16,
                    true,
                    format!("the CPU has {} and OpenVINO is installed", cpu.bf16_name()),
                )
            }
        }
    })
}

/// OpenVINO's CPU plugin configuration for ONNX Runtime's `load_config` option: the precision,
/// and one stream of `threads` threads per session, unpinned. A node runs one session per
/// detector; with the plugin's defaults every session pins its threads to the same cores, and
/// two sessions of one thread ran at the speed of one (measured: 23 against 46 fps, BENCHMARKS.md).
pub fn openvino_load_config(precision: Arithmetic, threads: usize) -> String {
    let hint = match precision {
        Arithmetic::Fp32 => "f32",
        Arithmetic::Bf16 => "bf16",
    };
    serde_json::json!({
        "CPU": {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads.max(1).to_string(),
            "NUM_STREAMS": "1",
            "ENABLE_CPU_PINNING": "NO",
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(flags: &str) -> CpuInfo {
        CpuInfo::parse(&format!(
            "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n"
        ))
    }

    const OV: &str = "/x/.deps/onnxruntime-openvino";

    fn auto(cpu: &CpuInfo, ov: Option<&str>) -> Plan {
        plan_on(ExecutionProvider::Auto, Precision::Auto, cpu, ov).unwrap()
    }

    #[test]
    fn cpu_flags_are_read_from_cpuinfo() {
        let c = cpu("avx512f avx512_bf16 avx512_vnni");
        assert_eq!(c.model, "Test CPU");
        assert!(c.avx512_bf16 && !c.amx_bf16 && c.has_bf16());
        let c = cpu("amx_bf16 amx_tile");
        assert!(c.amx_bf16 && c.has_bf16());
        assert!(!cpu("avx512f avx2").has_bf16());
        // A flag is a whole word: avx512_bf16x is not avx512_bf16.
        assert!(!cpu("avx512_bf16x").has_bf16());
    }

    #[test]
    fn auto_is_bf16_on_openvino_only_where_the_cpu_has_bf16_and_openvino_is_installed() {
        let p = auto(&cpu("avx512_bf16"), Some(OV));
        assert_eq!(
            (p.provider, p.precision),
            (Provider::Openvino, Arithmetic::Bf16)
        );
        assert!(p.fallback_to_cpu);
        assert_eq!(p.library.as_deref(), Some(Path::new(OV)));

        let p = auto(&cpu("avx2 avx512f"), Some(OV));
        assert_eq!((p.provider, p.precision), (Provider::Cpu, Arithmetic::Fp32));
        assert_eq!(p.library, None);
        assert!(p.reason.contains("no bf16"), "{}", p.reason);

        let p = auto(&cpu("amx_bf16"), None);
        assert_eq!((p.provider, p.precision), (Provider::Cpu, Arithmetic::Fp32));
        assert!(p.reason.contains("not installed"), "{}", p.reason);
    }

    /// `plan` with no explicit library.
    fn plan_on(
        provider: ExecutionProvider,
        precision: Precision,
        cpu: &CpuInfo,
        openvino: Option<&str>,
    ) -> Result<Plan, String> {
        plan(provider, precision, cpu, None, openvino.map(Path::new))
    }

    #[test]
    fn explicit_choices_are_kept_or_refused() {
        let no_bf16 = cpu("avx2");
        let p = plan_on(
            ExecutionProvider::Auto,
            Precision::Fp32,
            &cpu("amx_bf16"),
            Some(OV),
        )
        .unwrap();
        assert_eq!((p.provider, p.precision), (Provider::Cpu, Arithmetic::Fp32));
        let p = plan_on(
            ExecutionProvider::Openvino,
            Precision::Auto,
            &no_bf16,
            Some(OV),
        )
        .unwrap();
        assert_eq!(
            (p.provider, p.precision),
            (Provider::Openvino, Arithmetic::Fp32)
        );
        assert!(!p.fallback_to_cpu);
        // bf16 asked for on a CPU without it still runs (OpenVINO emulates it, slowly): asked is asked.
        let p = plan_on(ExecutionProvider::Auto, Precision::Bf16, &no_bf16, Some(OV)).unwrap();
        assert_eq!(
            (p.provider, p.precision),
            (Provider::Openvino, Arithmetic::Bf16)
        );
        assert!(plan_on(ExecutionProvider::Cpu, Precision::Bf16, &no_bf16, Some(OV)).is_err());
        assert!(plan_on(ExecutionProvider::Openvino, Precision::Fp32, &no_bf16, None).is_err());
        let err = plan_on(ExecutionProvider::Auto, Precision::Bf16, &no_bf16, None).unwrap_err();
        assert!(err.contains("not installed"), "{err}");
        // An explicit library is used for whichever provider is chosen.
        let lib = Path::new("/opt/ort/libonnxruntime.so");
        let p = plan(
            ExecutionProvider::Auto,
            Precision::Auto,
            &cpu("amx_bf16"),
            Some(lib),
            None,
        )
        .unwrap();
        assert_eq!(p.library.as_deref(), Some(lib));
        assert_eq!(p.provider, Provider::Openvino);
    }

    #[test]
    fn openvino_config_names_the_precision_and_threads() {
        let c: serde_json::Value =
            serde_json::from_str(&openvino_load_config(Arithmetic::Bf16, 2)).unwrap();
        assert_eq!(c["CPU"]["INFERENCE_PRECISION_HINT"], "bf16");
        assert_eq!(c["CPU"]["INFERENCE_NUM_THREADS"], "2");
        assert_eq!(c["CPU"]["ENABLE_CPU_PINNING"], "NO");
        let c: serde_json::Value =
            serde_json::from_str(&openvino_load_config(Arithmetic::Fp32, 0)).unwrap();
        assert_eq!(c["CPU"]["INFERENCE_PRECISION_HINT"], "f32");
        assert_eq!(c["CPU"]["INFERENCE_NUM_THREADS"], "1");
    }
}
