//! fairseq wav2vec 2.0 checkpoints (the paper's own `.pt` files) and fairseq dictionaries.
//!
//! A fairseq checkpoint is a torch.save dict: the weights under `model`, the configuration as
//! `cfg` (a plain dict with `model` and `task` sections, fairseq ≥ 0.10 with hydra) or as `args`
//! (an `argparse.Namespace`, older files), and training state beside them (`extra_state`,
//! `last_optimizer_state`) that is never read into memory. It is read with the restricted
//! unpickler of [`super::pytorch`]: nothing in the file is imported or run.
//!
//! The weights are renamed to transformers' `Wav2Vec2ForCTC` names exactly as transformers'
//! `convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py` maps them, so the graph builder
//! (and every check it makes) is the same for both sources. Names the mapping does not know keep
//! their fairseq spelling, and the graph builder refuses them by name.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{pytorch, CheckpointError, StateDict, Tensor};

/// A fine-tuned model's weights live under these prefixes (`Wav2VecCtc.w2v_encoder`).
const FINETUNED_MODEL_PREFIX: &str = "w2v_encoder.w2v_model.";
const FINETUNED_HEAD_PREFIX: &str = "w2v_encoder.proj.";

/// The configuration sections of a fairseq checkpoint, as JSON objects.
#[derive(Clone, Debug, Default)]
pub struct Sections {
    /// The wav2vec 2.0 model's own configuration: `cfg.model` of a pre-training checkpoint, the
    /// fine-tuning run's `w2v_args.model`, or the flat `args` namespace (`w2v_args`) of old files.
    pub model: Map<String, Value>,
    /// The CTC fine-tuning model's configuration (`cfg.model` or `args` of a fine-tuned
    /// checkpoint); `None` for a pre-training checkpoint.
    pub ctc: Option<Map<String, Value>>,
    /// The task the checkpoint was trained on (`cfg.task`, or `args`): `normalize`, `sample_rate`.
    pub task: Map<String, Value>,
    /// Where the configuration came from, for messages: `cfg` or `args`.
    pub form: &'static str,
}

/// A fairseq checkpoint's weights under transformers' names, and its configuration.
#[derive(Debug)]
pub struct Checkpoint {
    pub state_dict: StateDict,
    pub sections: Sections,
}

impl Checkpoint {
    /// Whether the checkpoint has a CTC head (fine-tuned), i.e. `lm_head.weight` after renaming.
    pub fn has_ctc_head(&self) -> bool {
        self.state_dict.contains_key("lm_head.weight")
    }
}

/// Whether `path` is a torch.save zip archive (a fairseq checkpoint is one; an ONNX model never
/// starts with a zip header).
pub fn is_torch_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == *b"PK\x03\x04"
}

/// Read a fairseq wav2vec 2.0 checkpoint: the model's tensors (renamed to transformers' names)
/// and the configuration sections.
pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let ckpt = pytorch::read_checkpoint(path, &["cfg", "args"])?;
    let format = |reason: String| CheckpointError::Format {
        path: path.to_path_buf(),
        format: "fairseq checkpoint",
        reason,
    };
    let sections = sections(&ckpt.entries).map_err(format)?;
    let mut state_dict = StateDict::new();
    for (name, t) in ckpt.tensors {
        let hf = hf_name(&name);
        if state_dict.insert(hf.clone(), t).is_some() {
            return Err(CheckpointError::Duplicate {
                path: path.to_path_buf(),
                name: hf,
            });
        }
    }
    add_identity_projection(&mut state_dict, &sections.model);
    Ok(Checkpoint {
        state_dict,
        sections,
    })
}

/// The sections of `cfg` (preferred when present) or `args`.
fn sections(entries: &Map<String, Value>) -> Result<Sections, String> {
    let object = |v: &Value| v.as_object().cloned();
    // The part of a configuration that describes the model: `model` of a full configuration,
    // or the flat namespace itself.
    let model_part = |v: &Value| -> Option<Map<String, Value>> {
        match v.get("model") {
            Some(Value::Object(m)) => Some(m.clone()),
            _ => object(v),
        }
    };
    if let Some(cfg) = entries.get("cfg").filter(|v| !v.is_null()) {
        let model = cfg
            .get("model")
            .and_then(object)
            .ok_or("cfg has no model section")?;
        let task = cfg.get("task").and_then(object).unwrap_or_default();
        return Ok(match model.get("w2v_args").filter(|v| !v.is_null()) {
            Some(w2v) => Sections {
                model: model_part(w2v).ok_or("cfg.model.w2v_args is not a configuration")?,
                ctc: Some(model),
                task,
                form: "cfg",
            },
            None => Sections {
                model,
                ctc: None,
                task,
                form: "cfg",
            },
        });
    }
    if let Some(args) = entries.get("args").filter(|v| !v.is_null()) {
        let args = object(args).ok_or("args is not an argparse.Namespace")?;
        return Ok(match args.get("w2v_args").filter(|v| !v.is_null()) {
            Some(w2v) => Sections {
                model: model_part(w2v).ok_or("args.w2v_args is not a configuration")?,
                ctc: Some(args.clone()),
                task: args,
                form: "args",
            },
            None => Sections {
                model: args.clone(),
                ctc: None,
                task: args,
                form: "args",
            },
        });
    }
    Err("no cfg or args entry: not a fairseq checkpoint".into())
}

/// A fairseq parameter name as transformers' conversion script names it. Names it does not map
/// are returned unchanged (and refused by the graph builder).
pub fn hf_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix(FINETUNED_HEAD_PREFIX) {
        return format!("lm_head.{rest}");
    }
    let inner = name.strip_prefix(FINETUNED_MODEL_PREFIX).unwrap_or(name);
    model_name(inner).unwrap_or_else(|| name.to_string())
}

/// The transformers name of a `Wav2Vec2Model` (fairseq) parameter.
fn model_name(name: &str) -> Option<String> {
    // Pre-training-only modules: top-level in transformers' Wav2Vec2ForPreTraining.
    if name == "quantizer.vars" {
        return Some("quantizer.codevectors".into());
    }
    if name.starts_with("quantizer.weight_proj.") || name.starts_with("project_q.") {
        return Some(name.to_string());
    }
    if let Some(rest) = name.strip_prefix("final_proj.") {
        return Some(format!("project_hid.{rest}"));
    }
    let inner = if name == "mask_emb" {
        "masked_spec_embed".to_string()
    } else if let Some(rest) = name.strip_prefix("feature_extractor.conv_layers.") {
        // `<layer>.0.<param>`: the conv; `<layer>.2.<param>` (group norm) or `<layer>.2.1.<param>`
        // (layer norm inside TransposeLast): the norm.
        let (layer, rest) = rest.split_once('.')?;
        layer.parse::<usize>().ok()?;
        let param = match rest.split_once('.')? {
            ("0", p @ ("weight" | "bias")) => format!("conv.{p}"),
            ("2", p @ ("weight" | "bias" | "1.weight" | "1.bias")) => {
                format!("layer_norm.{}", p.trim_start_matches("1."))
            }
            _ => return None,
        };
        format!("feature_extractor.conv_layers.{layer}.{param}")
    } else if let Some(p) = name.strip_prefix("layer_norm.") {
        format!("feature_projection.layer_norm.{p}")
    } else if let Some(p) = name.strip_prefix("post_extract_proj.") {
        format!("feature_projection.projection.{p}")
    } else if let Some(p) = name.strip_prefix("encoder.pos_conv.0.") {
        format!("encoder.pos_conv_embed.conv.{p}")
    } else if let Some(p) = name.strip_prefix("encoder.layer_norm.") {
        format!("encoder.layer_norm.{p}")
    } else if let Some(rest) = name.strip_prefix("encoder.layers.") {
        let (layer, rest) = rest.split_once('.')?;
        layer.parse::<usize>().ok()?;
        let module = [
            ("self_attn.q_proj.", "attention.q_proj."),
            ("self_attn.k_proj.", "attention.k_proj."),
            ("self_attn.v_proj.", "attention.v_proj."),
            ("self_attn.out_proj.", "attention.out_proj."),
            ("self_attn_layer_norm.", "layer_norm."),
            ("fc1.", "feed_forward.intermediate_dense."),
            ("fc2.", "feed_forward.output_dense."),
            ("final_layer_norm.", "final_layer_norm."),
        ]
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|p| format!("{to}{p}")))?;
        format!("encoder.layers.{layer}.{module}")
    } else {
        return None;
    };
    Some(format!("wav2vec2.{inner}"))
}

/// fairseq leaves out `post_extract_proj` when the feature encoder's width already equals the
/// model's (`encoder_embed_dim`); transformers always has the projection. The identity is that
/// projection, exactly.
fn add_identity_projection(sd: &mut StateDict, model: &Map<String, Value>) {
    const W: &str = "wav2vec2.feature_projection.projection.weight";
    const B: &str = "wav2vec2.feature_projection.projection.bias";
    if sd.contains_key(W) || sd.contains_key(B) {
        return;
    }
    let Some(width) = sd
        .get("wav2vec2.feature_projection.layer_norm.weight")
        .and_then(|t| t.shape.first().copied())
    else {
        return;
    };
    let embed = model
        .get("encoder_embed_dim")
        .and_then(Value::as_u64)
        .unwrap_or(768);
    if embed != width as u64 {
        return; // a missing projection of another width stays missing: the builder says so
    }
    let mut eye = vec![0f32; width * width];
    for i in 0..width {
        eye[i * width + i] = 1.0;
    }
    sd.insert(W.into(), Tensor::new(vec![width, width], eye));
    sd.insert(B.into(), Tensor::new(vec![width], vec![0.0; width]));
}

/// The dictionary beside a checkpoint: `dict.ltr.txt`, else the only `dict.*.txt` there.
pub fn dictionary_beside(checkpoint: &Path) -> Option<PathBuf> {
    let dir = checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let ltr = dir.join("dict.ltr.txt");
    if ltr.is_file() {
        return Some(ltr);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("dict.") && n.ends_with(".txt"))
        })
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The special symbols fairseq's `Dictionary` starts with, in index order.
const SPECIALS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];

/// A fairseq dictionary (`dict.ltr.txt`: one `SYMBOL COUNT [#fairseq:overwrite]` per line) as
/// the CTC vocabulary, indexed by output: fairseq's `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then
/// the file's symbols in order, with the `<s>`/`<pad>` names swapped as transformers' conversion
/// does, so index 0, the CTC blank, is `<pad>` as in every Hugging Face CTC vocabulary.
pub fn read_dictionary(path: &Path) -> Result<Vec<String>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    parse_dictionary(&text).map_err(|reason| CheckpointError::Format {
        path: path.to_path_buf(),
        format: "fairseq dictionary",
        reason,
    })
}

fn parse_dictionary(text: &str) -> Result<Vec<String>, String> {
    let mut symbols: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let malformed = || {
            format!(
                "line {}: expected `<symbol> <count> [#fairseq:overwrite]`, got {line:?}",
                n + 1
            )
        };
        let (mut word, mut field) = line.rsplit_once(' ').ok_or_else(malformed)?;
        let overwrite = field == "#fairseq:overwrite";
        if overwrite {
            (word, field) = word.rsplit_once(' ').ok_or_else(malformed)?;
        }
        field.parse::<i64>().map_err(|_| malformed())?;
        if let Some(i) = symbols.iter().position(|s| s == word) {
            if !overwrite {
                return Err(format!(
                    "line {}: duplicate symbol {word:?} (fairseq refuses it without \
                     #fairseq:overwrite)",
                    n + 1
                ));
            }
            // fairseq gives the symbol a new index; the old one no longer maps to it.
            symbols[i] = String::new();
        }
        symbols.push(word.to_string());
    }
    symbols.swap(0, 1);
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_follow_the_conversion_script() {
        for (fairseq, hf) in [
            (
                "w2v_encoder.w2v_model.feature_extractor.conv_layers.0.0.weight",
                "wav2vec2.feature_extractor.conv_layers.0.conv.weight",
            ),
            (
                "w2v_encoder.w2v_model.feature_extractor.conv_layers.3.0.bias",
                "wav2vec2.feature_extractor.conv_layers.3.conv.bias",
            ),
            (
                "w2v_encoder.w2v_model.feature_extractor.conv_layers.0.2.weight",
                "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight",
            ),
            (
                "feature_extractor.conv_layers.4.2.1.bias",
                "wav2vec2.feature_extractor.conv_layers.4.layer_norm.bias",
            ),
            (
                "w2v_encoder.w2v_model.layer_norm.weight",
                "wav2vec2.feature_projection.layer_norm.weight",
            ),
            (
                "w2v_encoder.w2v_model.post_extract_proj.bias",
                "wav2vec2.feature_projection.projection.bias",
            ),
            (
                "w2v_encoder.w2v_model.encoder.pos_conv.0.weight_g",
                "wav2vec2.encoder.pos_conv_embed.conv.weight_g",
            ),
            (
                "w2v_encoder.w2v_model.encoder.layers.11.self_attn.out_proj.weight",
                "wav2vec2.encoder.layers.11.attention.out_proj.weight",
            ),
            (
                "encoder.layers.0.self_attn_layer_norm.bias",
                "wav2vec2.encoder.layers.0.layer_norm.bias",
            ),
            (
                "encoder.layers.1.fc1.weight",
                "wav2vec2.encoder.layers.1.feed_forward.intermediate_dense.weight",
            ),
            (
                "encoder.layers.1.fc2.bias",
                "wav2vec2.encoder.layers.1.feed_forward.output_dense.bias",
            ),
            (
                "encoder.layers.1.final_layer_norm.weight",
                "wav2vec2.encoder.layers.1.final_layer_norm.weight",
            ),
            (
                "encoder.layer_norm.bias",
                "wav2vec2.encoder.layer_norm.bias",
            ),
            (
                "w2v_encoder.w2v_model.mask_emb",
                "wav2vec2.masked_spec_embed",
            ),
            ("w2v_encoder.proj.weight", "lm_head.weight"),
            ("quantizer.vars", "quantizer.codevectors"),
            (
                "quantizer.weight_proj.weight",
                "quantizer.weight_proj.weight",
            ),
            ("project_q.bias", "project_q.bias"),
            ("final_proj.weight", "project_hid.weight"),
            // Unknown names keep their spelling, for the builder to refuse by name.
            (
                "w2v_encoder.w2v_model.encoder.layers.0.self_attn.bias_k",
                "w2v_encoder.w2v_model.encoder.layers.0.self_attn.bias_k",
            ),
            ("decoder.embed_tokens.weight", "decoder.embed_tokens.weight"),
            (
                "feature_extractor.conv_layers.0.1.weight",
                "feature_extractor.conv_layers.0.1.weight",
            ),
        ] {
            assert_eq!(hf_name(fairseq), hf, "{fairseq}");
        }
    }

    #[test]
    fn dictionary_keeps_fairseq_indices_with_the_blank_first() {
        let v = parse_dictionary("| 94802\nE 51860\nT 38431\n' 1000\n\n").unwrap();
        assert_eq!(v, ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "'"]);
        // A symbol that contains a space: the count is the last field.
        let v = parse_dictionary("a b 3\n").unwrap();
        assert_eq!(v[4], "a b");
        let v = parse_dictionary("x 1\nx 2 #fairseq:overwrite\n").unwrap();
        assert_eq!(v[4..], ["", "x"]);
        for (text, want) in [
            ("E\n", "line 1"),
            ("E x\n", "line 1"),
            ("A 1\nA 2\n", "duplicate symbol \"A\""),
            ("<unk> 5\n", "duplicate symbol \"<unk>\""),
        ] {
            let e = parse_dictionary(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn sections_of_both_forms() {
        let cfg = serde_json::json!({"cfg": {
            "model": {"_name": "wav2vec_ctc", "w2v_args": {"model": {"_name": "wav2vec2",
                "encoder_layers": 2}, "task": {"normalize": true}}},
            "task": {"_name": "audio_finetuning", "normalize": true}}});
        let s = sections(cfg.as_object().unwrap()).unwrap();
        assert_eq!(s.model["encoder_layers"], 2);
        assert_eq!(s.ctc.unwrap()["_name"], "wav2vec_ctc");
        assert_eq!(s.task["normalize"], true);
        let args = serde_json::json!({"cfg": null, "args": {"arch": "wav2vec_ctc",
            "normalize": false, "w2v_args": {"arch": "wav2vec2", "encoder_layers": 3}}});
        let s = sections(args.as_object().unwrap()).unwrap();
        assert_eq!(
            (s.model["encoder_layers"].clone(), s.form),
            (3.into(), "args")
        );
        assert_eq!(s.task["normalize"], false);
        let pre = serde_json::json!({"args": {"arch": "wav2vec2", "encoder_layers": 4}});
        let s = sections(pre.as_object().unwrap()).unwrap();
        assert!(s.ctc.is_none());
        assert!(sections(&Map::new())
            .unwrap_err()
            .contains("not a fairseq checkpoint"));
    }
}
