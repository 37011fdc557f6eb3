//! Opening a model from the command line, with a progress bar on a terminal.

use std::io::IsTerminal;

use frugal_formats::ModelFiles;
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
