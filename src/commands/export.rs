use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use w2v_engine::precision::{Precision, QuantizationTarget};
use w2v_export::{CalibrationMethod, ExportError, ExportOptions};

/// A clap parser for `T`'s names (`T::from_str` of exactly the listed spellings), listed in the
/// help as clap lists a `ValueEnum`'s, with each value's help when given. The types themselves
/// live with their other uses (`w2v_engine::precision`, `w2v_export`).
fn listed<T>(values: Vec<PossibleValue>) -> impl TypedValueParser<Value = T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(values).map(|s| s.parse::<T>().expect("a listed value parses"))
}

fn precisions() -> impl TypedValueParser<Value = Precision> {
    listed(
        Precision::ALL
            .map(|p| PossibleValue::new(p.as_str()))
            .to_vec(),
    )
}

fn targets() -> impl TypedValueParser<Value = QuantizationTarget> {
    listed(
        QuantizationTarget::ALL
            .map(|t| {
                PossibleValue::new(t.as_str()).help(match t {
                    QuantizationTarget::Cpu => {
                        "Dynamic int8 (DynamicQuantizeLinear + MatMulInteger): ONNX Runtime CPU \
                         and tract"
                    }
                    QuantizationTarget::TensorRt => {
                        "Explicit QDQ pairs with calibrated activation scales, for TensorRT"
                    }
                })
            })
            .to_vec(),
    )
}

fn calibration_methods() -> impl TypedValueParser<Value = CalibrationMethod> {
    listed(
        CalibrationMethod::ALL
            .map(|m| {
                PossibleValue::new(m.as_str()).help(match m {
                    CalibrationMethod::Percentile => "The 99.99th percentile of |x|",
                    CalibrationMethod::Entropy => {
                        "The clipping range with the least KL divergence after 8-bit \
                         quantization (TensorRT's entropy calibrator)"
                    }
                })
            })
            .to_vec(),
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, vocab.json, weights), a fine-tuned fairseq
    /// wav2vec 2.0 CTC checkpoint (.pt), or an fp32 ONNX model made by `w2v export` (a
    /// fine-tuned one, say) to re-quantize at --precision fp16 or int8 (or to store at fp32 with
    /// --fp16-weights).
    src: PathBuf,
    /// The fairseq dictionary of a fairseq checkpoint [default: dict.ltr.txt, or the only
    /// dict.*.txt, beside the checkpoint].
    #[arg(long, value_name = "dict.ltr.txt")]
    dict: Option<PathBuf>,
    /// Output ONNX file.
    #[arg(short, long)]
    output: PathBuf,
    /// Numeric precision of the exported model.
    #[arg(long, value_parser = precisions(), default_value = "fp32")]
    precision: Precision,
    /// Store an fp32 model's weights as float16 (half the file): they are widened back to
    /// float32 when the model loads and it computes in float32; each weight is rounded to
    /// float16 (relative error at most 2^-11).
    #[arg(long)]
    fp16_weights: bool,
    /// Runtime an int8 model is laid out for.
    #[arg(long, value_parser = targets(), default_value = "cpu")]
    target: QuantizationTarget,
    /// Quantize the feature encoder's convolutions too (int8; they stay float32 by default).
    #[arg(long)]
    quantize_conv: bool,
    /// Eval audio for the accuracy report (`path<TAB>transcript` rows); default: a synthetic set.
    #[arg(long, value_name = "DATA.tsv")]
    eval: Option<PathBuf>,
    /// Audio that calibrates activation scales for `--target tensorrt` (default: --eval or synthetic).
    #[arg(long, value_name = "DATA.tsv")]
    calibration: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration audio (`--target tensorrt`).
    #[arg(long, value_parser = calibration_methods(), default_value = "percentile")]
    calibration_method: CalibrationMethod,
    /// Fail, writing no model, when the WER rises by more than this many percentage points.
    #[arg(long, value_name = "POINTS")]
    max_wer_increase: Option<f64>,
    /// ONNX opset to target [default: 17 from a folder; an ONNX source keeps its own].
    #[arg(long)]
    opset: Option<i64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let options = ExportOptions {
        opset: args.opset,
        precision: args.precision,
        target: args.target,
        quantize_conv: args.quantize_conv,
        eval: args.eval,
        calibration: args.calibration,
        calibration_method: args.calibration_method,
        max_wer_increase: args.max_wer_increase,
        skip_report: false,
        dict: args.dict,
        new_head: None,
        fp16_weights: args.fp16_weights,
    };
    let summary = match w2v_export::export(&args.src, &args.output, &options) {
        Ok(s) => s,
        Err(e) => {
            // A failed --max-wer-increase check still shows the report that failed it.
            if let ExportError::WerIncrease { report, .. } = &e {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(report)?);
                } else {
                    eprintln!("accuracy: {}", report.summary_line());
                }
            }
            return Err(e.into());
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "exported {} -> {} ({:.1} M parameters, {:.1} MB, {}{}, opset {}, {:.2} s)",
            summary.source.display(),
            summary.output.display(),
            summary.parameters as f64 / 1e6,
            summary.output_bytes as f64 / 1e6,
            summary.precision,
            match summary.target.as_deref() {
                Some(t) => format!(" for {t}"),
                None if summary
                    .info
                    .raw
                    .contains_key(w2v_engine::model_info::keys::WEIGHT_STORAGE) =>
                {
                    " with fp16 weights".into()
                }
                None => String::new(),
            },
            summary.opset,
            summary.seconds
        );
        if let Some(r) = &summary.report {
            println!("accuracy: {}", r.summary_line());
        }
    }
    Ok(ExitCode::SUCCESS)
}
