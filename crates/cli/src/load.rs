//! Opening a model from the command line, with a progress bar on a terminal.

use std::io::IsTerminal;

use anyhow::Context;
use frugal_formats::ModelFiles;
use frugal_kernels::quant::QuantType;
use frugal_model::quantized_weights::QuantizedWeights;
use frugal_model::LoadOptions;
use frugal_model::Model;
use indicatif::{ProgressBar, ProgressStyle};

/// Open `spec` (a folder, a `.gguf` file or `ORG/NAME` in the hub cache), mapping every weight
/// file. On a terminal a bar counts the files mapped; in a pipe nothing is printed.
pub fn open_model(spec: &str) -> anyhow::Result<ModelFiles> {
    if !std::io::stderr().is_terminal() {
        return Ok(ModelFiles::open(spec)?);
    }
    let bar = ProgressBar::new(0).with_message(format!("opening {spec}"));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files")
            // OK because the template above is a valid constant.
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    let files = ModelFiles::open_with_progress(spec, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    Ok(files?)
}

/// `--quant TYPE`: the ggml types a safetensors model can be quantized to on load.
const QUANT_TYPES: [QuantType; 12] = [
    QuantType::Q8_0,
    QuantType::Q6K,
    QuantType::Q5K,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q4K,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::IQ4NL,
    QuantType::IQ4XS,
    QuantType::Q3K,
    QuantType::Q2K,
];

/// Parses `--quant` (`q8_0`, `Q4_K`, any case) or says which types exist.
pub fn parse_quant(name: &str) -> anyhow::Result<QuantType> {
    let up = name.to_ascii_uppercase();
    QUANT_TYPES
        .into_iter()
        .find(|t| t.name() == up)
        .ok_or_else(|| {
            let valid: Vec<&str> = QUANT_TYPES.iter().map(|t| t.name()).collect();
            anyhow::anyhow!(
                "--quant {name:?} is not a type to quantize to; valid types: {}",
                valid.join(", ")
            )
        })
}

/// With `--quant`, quantizes a safetensors model's matrices (see
/// `frugal_model::quantized_weights`) before the model is built from them; a bar on a
/// terminal counts the matrices. GGUF files are refused (their weights are already typed).
pub fn quantize_on_load<'a>(
    files: &'a ModelFiles,
    quant: Option<&str>,
    threads: Option<usize>,
) -> anyhow::Result<Option<QuantizedWeights<'a>>> {
    let Some(name) = quant else { return Ok(None) };
    let ty = parse_quant(name)?;
    if files.gguf_metadata().is_some() {
        anyhow::bail!("--quant applies to safetensors models; a GGUF file keeps its own tensor types (use `frugal quantize` to make another GGUF)");
    }
    let config = files.config()?;
    let src = files.tensors().context("the model has no weights")?;
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0).with_message(format!("quantizing to {ty}"));
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} matrices")
                // OK because the template above is a valid constant.
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let qw = QuantizedWeights::new(&config, src, ty, threads, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    Ok(Some(qw.with_context(|| format!("quantizing to {ty}"))?))
}

/// The model, from the quantized weights when there are some (`options` for a GGUF file;
/// quantized weights take only its `exact_activations`).
pub fn build_model<'a>(
    files: &'a ModelFiles,
    qw: Option<&'a QuantizedWeights<'a>>,
    options: LoadOptions,
) -> anyhow::Result<Model<'a>> {
    Ok(match qw {
        Some(qw) => Model::from_parts_with(files.config()?, qw, options)?,
        None => Model::load_with(files, options)?,
    })
}
