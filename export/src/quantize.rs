//! Reduced-precision export: apply a [`crate::precision`] pass to the float32 graph, measure the
//! result against float32 ([`crate::report`]), enforce `--max-wer-increase`, and write the model
//! with its precision, target and report summary in the metadata.

use std::path::Path;

use w2v_engine::model_info::keys;
use w2v_engine::ModelInfo;

use crate::graph::GraphBuilder;
use crate::precision;
use crate::report::{self, AccuracyReport};
use crate::{ExportError, ExportOptions};
use w2v_engine::precision::{Precision, QuantizationTarget};

pub const SCHEME_FP16: &str =
    "fp16 weights and compute in the transformer and feature projection; float32 conv feature encoder, LayerNorm, softmax with mask bias, positional conv, mask arithmetic, lm_head; float32 inputs and outputs";
pub const SCHEME_INT8_DYNAMIC: &str =
    "int8 per-output-channel symmetric weights with neighbouring-row pairs |q1|+|q2| <= 128 (no int16 saturation on any CPU), dynamic uint8 activations (DynamicQuantizeLinear + MatMulInteger) for transformer, projection and lm_head matmuls";
pub const SCHEME_INT8_QDQ: &str =
    "QDQ int8: per-output-channel symmetric weights (matmul row pairs |q1|+|q2| <= 128, conv weights in [-64, 64]), per-tensor symmetric calibrated activations, zero points 0, for transformer, projection and lm_head matmuls";
/// How the convolutions were treated, appended to the int8 schemes.
pub const SCHEME_CONVS_FLOAT: &str = "; all convs float32";
pub const SCHEME_CONVS_DYNAMIC: &str =
    "; feature-encoder convs after the first likewise, as time-major im2col matmuls with per-row activation ranges (row range division, DynamicQuantizeLinear + MatMulInteger); first conv and positional conv float32";
pub const SCHEME_CONVS_QDQ: &str =
    "; feature-encoder convs likewise (QDQ around Conv), positional conv float32";

fn io_err(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn write_plain(g: &GraphBuilder, info: &ModelInfo, path: &Path) -> Result<(), ExportError> {
    let file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    g.write_model(&mut w, env!("CARGO_PKG_VERSION"), info.to_metadata_props())
        .and_then(|()| std::io::Write::flush(&mut w))
        .map_err(|e| io_err(path, e))
}

/// Reduce `g` (float32) to `options.precision` and write it to `output`; `info` gets the
/// quantization keys. `fp32_source` is the float32 model file `g` was read from, if any: the
/// report and calibration run it rather than a copy. Returns the accuracy report unless
/// `options.skip_report`.
pub(crate) fn export_reduced(
    mut g: GraphBuilder,
    info: &mut ModelInfo,
    output: &Path,
    options: &ExportOptions,
    fp32_source: Option<&Path>,
) -> Result<Option<AccuracyReport>, ExportError> {
    let tmp = tempfile::tempdir().map_err(|e| io_err(Path::new("temporary directory"), e))?;
    let fp32_path = fp32_source
        .map(Path::to_path_buf)
        .unwrap_or_else(|| tmp.path().join("fp32.onnx"));
    let reduced_path = tmp.path().join("reduced.onnx");
    let eval = if options.skip_report {
        None
    } else {
        Some(report::eval_set(options.eval.as_ref(), info.sample_rate)?)
    };
    let needs_fp32 = eval.is_some() || options.target == QuantizationTarget::TensorRt;
    if needs_fp32 && fp32_source.is_none() {
        let mut fp32_info = info.clone();
        fp32_info.precision = Precision::Fp32.as_str().into();
        write_plain(&g, &fp32_info, &fp32_path)?;
    }
    let precision_name = options.precision.as_str();
    let target = (options.precision == Precision::Int8).then_some(options.target);
    match (options.precision, options.target) {
        (Precision::Fp32, _) => unreachable!("float32 exports are not reduced"),
        (Precision::Fp16, _) => {
            let s = precision::to_fp16(&mut g);
            tracing::info!(
                f16_nodes = s.f16_nodes,
                f32_nodes = s.f32_nodes,
                casts = s.casts,
                "fp16 pass"
            );
            info.raw
                .insert(keys::QUANTIZATION_SCHEME.into(), SCHEME_FP16.into());
        }
        (Precision::Int8, QuantizationTarget::Cpu) => {
            if options.quantize_conv {
                let cfg =
                    w2v_engine::config::Wav2Vec2Config::parse(output, &info.config.to_string())?;
                crate::wav2vec2::feature_encoder_as_matmuls(&mut g, &cfg)?;
            }
            let s = precision::to_int8(&mut g, options.quantize_conv);
            tracing::info!(
                matmuls = s.matmuls,
                convs = s.convs,
                weight_rel_error = s.weight_rel_error,
                "int8 pass"
            );
            let convs = if options.quantize_conv {
                SCHEME_CONVS_DYNAMIC
            } else {
                SCHEME_CONVS_FLOAT
            };
            info.raw.insert(
                keys::QUANTIZATION_SCHEME.into(),
                format!("{SCHEME_INT8_DYNAMIC}{convs}"),
            );
        }
        (Precision::Int8, QuantizationTarget::TensorRt) => {
            let calib = match &options.calibration {
                Some(p) => report::EvalSet::from_manifest(p, info.sample_rate)?,
                None => match &options.eval {
                    Some(p) => report::EvalSet::from_manifest(p, info.sample_rate)?,
                    None => report::EvalSet::synthetic(info.sample_rate),
                },
            };
            let names = precision::qdq_activation_names(&g, options.quantize_conv);
            let (scales, how) = crate::calibrate::activation_scales(
                &fp32_path,
                &names,
                &calib,
                options.calibration_method,
            )?;
            let s = precision::to_qdq(&mut g, &scales, options.quantize_conv);
            tracing::info!(matmuls = s.matmuls, convs = s.convs, "qdq pass");
            let convs = if options.quantize_conv {
                SCHEME_CONVS_QDQ
            } else {
                SCHEME_CONVS_FLOAT
            };
            info.raw.insert(
                keys::QUANTIZATION_SCHEME.into(),
                format!("{SCHEME_INT8_QDQ}{convs}"),
            );
            info.raw.insert(keys::QUANTIZATION_CALIBRATION.into(), how);
        }
    }
    let saved = precision::f16_storage(&mut g, precision::F16_STORAGE_MIN_ELEMENTS);
    tracing::info!(
        saved_bytes = saved,
        "float32-compute weights stored as float16"
    );
    info.precision = precision_name.into();
    if let Some(t) = target {
        info.raw
            .insert(keys::QUANTIZATION_TARGET.into(), t.as_str().into());
        let convs = if options.quantize_conv {
            "int8"
        } else {
            "float32"
        };
        info.raw
            .insert(keys::QUANTIZATION_CONVS.into(), convs.into());
    }
    let mut result = None;
    if let Some(set) = &eval {
        write_plain(&g, info, &reduced_path)?;
        let r = report::compare(
            &fp32_path,
            &reduced_path,
            set,
            precision_name,
            target.map(QuantizationTarget::as_str),
        )?;
        if let Some(limit) = options.max_wer_increase {
            if r.wer_increase_points > limit {
                return Err(ExportError::WerIncrease {
                    precision: precision_name.into(),
                    fp32: r.wer_fp32.unwrap_or(0.0),
                    quantized: r.wer_quantized.unwrap_or(r.wer_vs_fp32),
                    increase: r.wer_increase_points,
                    limit,
                    report: Box::new(r),
                });
            }
        }
        info.raw.insert(
            keys::QUANTIZATION_REPORT.into(),
            serde_json::to_string(&r).expect("report serializes"),
        );
        result = Some(r);
    }
    crate::write_graph(&g, info, output)?;
    Ok(result)
}
