//! `frugal quantize IN OUT.gguf --type Q4_K_M`: write a quantized GGUF that llama.cpp reads,
//! with llama.cpp's per-tensor type mix for the preset (`frugal_model::quant_plan`) and its
//! quantizers' exact bytes. IN is a GGUF file (F32, F16 or BF16 tensors; splits too).

use std::collections::BTreeMap;
use std::io::{BufWriter, IsTerminal};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use frugal_formats::gguf::GgufModel;
use frugal_model::quant_plan::Preset;
use frugal_model::quantize_gguf::{quantize_gguf, requantize_gguf};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `frugal quantize`.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The input: a GGUF file with F32/F16/BF16 weights (the first file of a split model).
    pub input: String,
    /// The output GGUF file.
    pub output: String,
    /// llama.cpp preset: Q4_K_M, Q8_0, Q4_0, Q5_K_M, Q6_K, IQ4_XS, ... (any case).
    #[arg(long = "type")]
    pub ty: String,
    /// Accept quantized input tensors: dequantize them and quantize again (as llama.cpp's
    /// --allow-requantize). Precision is lost twice; meant for a smaller copy such as an
    /// expert-cache fallback (`--expert-fallback`), not for a model to ship.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Threads for quantizing (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The presets' names, for error messages.
fn valid_types() -> String {
    Preset::all()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Run the command.
pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let Some(preset) = Preset::from_name(&args.ty) else {
        bail!(
            "--type {:?} is not a quantization type; valid types: {}",
            args.ty,
            valid_types()
        );
    };
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let input = Path::new(&args.input);
    if input.is_dir() || input.extension().is_none_or(|e| e != "gguf") {
        bail!(
            "{}: give a GGUF file (F32/F16/BF16); quantizing a Hugging Face folder directly is \
             not supported yet (convert it with llama.cpp's convert_hf_to_gguf.py --outtype f32, \
             or run it quantized with `frugal run --quant TYPE`)",
            args.input
        );
    }
    let model = GgufModel::open(input).with_context(|| format!("opening {}", args.input))?;
    let out_path = Path::new(&args.output);
    if out_path
        .canonicalize()
        .ok()
        .is_some_and(|o| input.canonicalize().ok() == Some(o))
    {
        bail!("the output {} is the input file", args.output);
    }
    let file = std::fs::File::create(out_path)
        .with_context(|| format!("cannot write the output {}", args.output))?;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("quantizing [{bar:30}] {pos}/{len} tensors {msg}")
                // OK because the template above is a valid constant.
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    if args.allow_requantize {
        eprintln!(
            "warning: --allow-requantize: quantized tensors are dequantized and quantized again, \
             which loses more quality than quantizing from F32/F16/BF16"
        );
    }
    let quantize = if args.allow_requantize {
        requantize_gguf::<BufWriter<std::fs::File>>
    } else {
        quantize_gguf::<BufWriter<std::fs::File>>
    };
    let result = quantize(
        &model,
        preset,
        BufWriter::new(file),
        threads,
        &mut |i, n, name| {
            bar.set_length(n as u64);
            bar.set_position(i as u64);
            bar.set_message(name.to_owned());
        },
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            // Leave no half-written file behind.
            let _ = std::fs::remove_file(out_path);
            return Err(e).with_context(|| format!("quantizing {}", args.input));
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &report.tensors {
        *hist.entry(p.to.name()).or_default() += 1;
    }
    let fallbacks = report.tensors.iter().filter(|p| p.fallback).count();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{} -> {} ({preset}) in {secs:.2} s",
        args.input, args.output
    );
    let types: Vec<String> = hist.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("tensor types: {}", types.join(", "));
    if fallbacks > 0 {
        println!("{fallbacks} tensor(s) fell back to another type (rows not whole blocks)");
    }
    println!(
        "tensor data: {:.2} MiB -> {:.2} MiB; file: {} bytes ({:.2} MiB)",
        mib(report.bytes_in),
        mib(report.bytes_out),
        report.file_bytes,
        mib(report.file_bytes)
    );
    Ok(())
}
