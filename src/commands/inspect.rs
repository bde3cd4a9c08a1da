use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use w2v_engine::ModelInfo;

#[derive(clap::Args)]
pub struct Args {
    /// A w2v ONNX model (default: the shipped model, found like `transcribe` finds it).
    model: Option<PathBuf>,
    /// Print all metadata as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let model = w2v::resolve_model(args.model.as_deref())?;
    let info = ModelInfo::read(&model)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = &info.config;
    let get = |k: &str| {
        cfg.get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    };
    println!("model:            {}", model.display());
    println!("type:             {}", info.model_type);
    println!("precision:        {}", info.precision);
    println!(
        "architecture:     {} layers, hidden {}, {} heads, feat_extract_norm {}, stable layer norm {}",
        get("num_hidden_layers"),
        get("hidden_size"),
        get("num_attention_heads"),
        get("feat_extract_norm"),
        get("do_stable_layer_norm")
    );
    println!(
        "vocabulary:       {} tokens (blank id {})",
        info.vocab.len(),
        info.pad_token_id
    );
    println!(
        "word delimiter:   {}",
        info.word_delimiter_token.as_deref().unwrap_or("(none)")
    );
    println!("sample rate:      {} Hz", info.sample_rate);
    println!("normalize input:  {}", info.do_normalize);
    println!(
        "frame stride:     {} samples ({:.1} ms)",
        info.frame_stride,
        info.frame_stride as f64 * 1000.0 / info.sample_rate as f64
    );
    println!(
        "receptive field:  {} samples ({:.1} ms)",
        info.receptive_field,
        info.receptive_field as f64 * 1000.0 / info.sample_rate as f64
    );
    println!("attention mask:   {}", info.uses_attention_mask);
    println!("source sha256:    {}", info.source_sha256);
    println!("exporter version: {}", info.exporter_version);
    Ok(ExitCode::SUCCESS)
}
