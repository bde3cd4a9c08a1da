use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::ValueEnum;
use w2v_export::{export_hf_folder, ExportOptions, DEFAULT_OPSET};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, vocab.json, weights).
    src: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
    /// Numeric precision of the exported model.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    /// ONNX opset to target.
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    opset: i64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.precision != Precision::Fp32 {
        bail!(
            "--precision {:?} is not available yet; use fp32",
            args.precision
        );
    }
    let summary = export_hf_folder(
        &args.src,
        &args.output,
        &ExportOptions { opset: args.opset },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "exported {} -> {} ({:.1} M parameters, {:.1} MB, opset {}, {:.2} s)",
            summary.source.display(),
            summary.output.display(),
            summary.parameters as f64 / 1e6,
            summary.output_bytes as f64 / 1e6,
            summary.opset,
            summary.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
