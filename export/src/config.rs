//! fairseq wav2vec 2.0 checkpoints' configuration as the engine's model description
//! ([`Wav2Vec2Config`], the Hugging Face config of the same model): export-only logic.

use std::path::Path;

use w2v_engine::config::{ConfigError, Wav2Vec2Config};

/// The configuration of a fairseq wav2vec 2.0 checkpoint (`path`) as the Hugging Face config
/// of the same model: the architecture from its wav2vec 2.0 section (fairseq's
/// `Wav2Vec2Config` defaults for absent fields), the SpecAugment and LayerDrop settings of
/// its CTC fine-tuning section (the defaults `w2v finetune` starts from), and the vocabulary
/// of `vocab_size` outputs with the blank `<pad>` at 0 as transformers' conversion gives it.
/// fairseq settings that change the forward pass and that the graph builder does not
/// implement are refused by their fairseq name and value.
pub fn from_fairseq(
    path: &Path,
    sections: &crate::checkpoint::fairseq::Sections,
    vocab_size: usize,
) -> Result<Wav2Vec2Config, ConfigError> {
    let raw = fairseq_to_hf(path, sections, vocab_size)?;
    Wav2Vec2Config::from_value(path, raw)
}

/// fairseq's `Wav2Vec2Config.conv_feature_layers` default (wav2vec2-base and -large).
const FAIRSEQ_CONV_LAYERS: &str = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]";

fn fairseq_to_hf(
    path: &Path,
    sections: &crate::checkpoint::fairseq::Sections,
    vocab_size: usize,
) -> Result<serde_json::Value, ConfigError> {
    use serde_json::{json, Value};
    let form = sections.form;
    let bad = |field: &'static str, value: &Value, reason: &str| ConfigError::Unsupported {
        path: path.to_path_buf(),
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let m = &sections.model;
    let get = |k: &str| m.get(k).filter(|v| !v.is_null());
    let int = |field: &'static str, default: u64| -> Result<u64, ConfigError> {
        match get(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad(field, v, "expected a non-negative integer")),
        }
    };
    let flag = |field: &'static str| -> Result<bool, ConfigError> {
        match get(field) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(field, v, "expected true or false")),
        }
    };
    let text = |field: &'static str, default: &'static str| -> Result<String, ConfigError> {
        match get(field) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field, v, "expected a string")),
        }
    };
    // The model's name: `_name` in a cfg section, `arch` in args.
    let name = |section: &serde_json::Map<String, Value>| {
        section
            .get("_name")
            .or_else(|| section.get("arch"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(n) = name(m).filter(|n| n != "wav2vec2") {
        return Err(bad(
            "model",
            &Value::String(n),
            "only wav2vec 2.0 (`wav2vec2`) models are supported",
        ));
    }
    if let Some(ctc) = &sections.ctc {
        if let Some(n) = name(ctc).filter(|n| n != "wav2vec_ctc" && n != "wav2vec2_ctc") {
            return Err(bad(
                "model",
                &Value::String(n),
                "only CTC fine-tuned models (`wav2vec_ctc`) are supported",
            ));
        }
        if let Some(w) = ctc.get("blank_weight").filter(|w| w.as_f64() != Some(0.0)) {
            if !w.is_null() {
                return Err(bad(
                    "blank_weight",
                    w,
                    "a blank logit offset is not part of the exported model",
                ));
            }
        }
    }
    let layer_type = text("layer_type", "transformer")?;
    if layer_type != "transformer" {
        return Err(bad(
            "layer_type",
            &Value::String(layer_type),
            "only \"transformer\" layers are implemented (not conformer or adapter layers)",
        ));
    }
    let depth = int("pos_conv_depth", 1)?;
    if depth != 1 {
        return Err(bad(
            "pos_conv_depth",
            &json!(depth),
            "only the single positional convolution of wav2vec 2.0 is implemented",
        ));
    }
    if flag("quantize_input")? {
        return Err(bad(
            "quantize_input",
            &json!(true),
            "quantized Transformer input is not implemented",
        ));
    }
    let extractor = text("extractor_mode", "default")?;
    let feat_extract_norm = match extractor.as_str() {
        "default" => "group",
        "layer_norm" => "layer",
        _ => {
            return Err(bad(
                "extractor_mode",
                &Value::String(extractor),
                "expected \"default\" or \"layer_norm\"",
            ))
        }
    };
    let act = text("activation_fn", "gelu")?;
    let hidden_act = match act.as_str() {
        "gelu" => "gelu",
        "gelu_fast" | "gelu_accurate" => "gelu_new",
        "relu" => "relu",
        "swish" => "swish",
        _ => {
            return Err(bad(
                "activation_fn",
                &Value::String(act),
                "supported: gelu, gelu_accurate, gelu_fast, relu, swish",
            ))
        }
    };
    let conv_text = text("conv_feature_layers", FAIRSEQ_CONV_LAYERS)?;
    let layers = parse_conv_layers(&conv_text).map_err(|reason| {
        bad(
            "conv_feature_layers",
            &Value::String(conv_text.clone()),
            &reason,
        )
    })?;
    let conv_dim: Vec<usize> = layers.iter().map(|l| l.0).collect();
    let conv_kernel: Vec<usize> = layers.iter().map(|l| l.1).collect();
    let conv_stride: Vec<usize> = layers.iter().map(|l| l.2).collect();
    // SpecAugment and LayerDrop of the fine-tuning run (fairseq's Wav2Vec2AsrConfig defaults),
    // or of pre-training.
    // A pre-trained model starts from fairseq's fine-tuning defaults (Wav2Vec2AsrConfig).
    let defaults = serde_json::Map::new();
    let tuning = sections.ctc.as_ref().unwrap_or(&defaults);
    let f = |k: &str, d: f64| tuning.get(k).and_then(Value::as_f64).unwrap_or(d);
    let n = |k: &str, d: u64| tuning.get(k).and_then(Value::as_u64).unwrap_or(d);
    Ok(json!({
        "architectures": ["Wav2Vec2ForCTC"],
        "model_type": "wav2vec2",
        "conv_dim": conv_dim,
        "conv_kernel": conv_kernel,
        "conv_stride": conv_stride,
        "num_feat_extract_layers": layers.len(),
        "conv_bias": flag("conv_bias")?,
        "feat_extract_norm": feat_extract_norm,
        "feat_extract_activation": "gelu",
        "hidden_size": int("encoder_embed_dim", 768)?,
        "num_hidden_layers": int("encoder_layers", 12)?,
        "num_attention_heads": int("encoder_attention_heads", 12)?,
        "intermediate_size": int("encoder_ffn_embed_dim", 3072)?,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        "num_conv_pos_embeddings": int("conv_pos", 128)?,
        "num_conv_pos_embedding_groups": int("conv_pos_groups", 16)?,
        "do_stable_layer_norm": flag("layer_norm_first")?,
        "vocab_size": vocab_size,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "apply_spec_augment": true,
        "mask_time_prob": f("mask_prob", 0.5),
        "mask_time_length": n("mask_length", 10),
        "mask_feature_prob": f("mask_channel_prob", 0.0),
        "mask_feature_length": n("mask_channel_length", 10),
        "layerdrop": f("layerdrop", 0.0),
        "fairseq": {"form": form, "model": m.get("_name").or_else(|| m.get("arch"))},
    }))
}

/// fairseq's `conv_feature_layers`, a Python expression such as
/// `[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2`: lists of (dim, kernel, stride) tuples
/// joined by `+` and repeated by `* n`. Evaluated here by a parser of that grammar alone.
fn parse_conv_layers(text: &str) -> Result<Vec<(usize, usize, usize)>, String> {
    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.s.get(self.i) == Some(&c) {
                self.i += 1;
                true
            } else {
                false
            }
        }
        fn expect(&mut self, c: u8) -> Result<(), String> {
            if self.eat(c) {
                Ok(())
            } else {
                Err(format!("expected `{}` at offset {}", c as char, self.i))
            }
        }
        fn int(&mut self) -> Result<usize, String> {
            self.ws();
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            std::str::from_utf8(&self.s[start..self.i])
                .ok()
                .and_then(|t| t.parse().ok())
                .filter(|&v| v <= 1 << 20)
                .ok_or_else(|| format!("expected an integer at offset {start}"))
        }
        fn list(&mut self) -> Result<Vec<(usize, usize, usize)>, String> {
            self.expect(b'[')?;
            let mut out = Vec::new();
            loop {
                if self.eat(b']') {
                    break;
                }
                self.expect(b'(')?;
                let d = self.int()?;
                self.expect(b',')?;
                let k = self.int()?;
                self.expect(b',')?;
                let s = self.int()?;
                self.eat(b',');
                self.expect(b')')?;
                out.push((d, k, s));
                if !self.eat(b',') {
                    self.expect(b']')?;
                    break;
                }
            }
            Ok(out)
        }
    }
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        let mut term = p.list()?;
        while p.eat(b'*') {
            let n = p.int()?;
            if term.len().saturating_mul(n) > 64 {
                return Err("more than 64 layers".into());
            }
            term = term.repeat(n);
        }
        out.extend(term);
        if out.len() > 64 {
            return Err("more than 64 layers".into());
        }
        if !p.eat(b'+') {
            break;
        }
    }
    p.ws();
    if p.i != text.len() {
        return Err(format!("unexpected text at offset {}", p.i));
    }
    if out.is_empty() {
        return Err("no layers".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use w2v_engine::config::{Activation, FeatExtractNorm};

    #[test]
    fn conv_feature_layers_expressions() {
        let base = parse_conv_layers(FAIRSEQ_CONV_LAYERS).unwrap();
        assert_eq!(base.len(), 7);
        assert_eq!(base[0], (512, 10, 5));
        assert_eq!(base[6], (512, 2, 2));
        assert_eq!(
            parse_conv_layers("[(16,10,5),(16,3,2)]*2 + [ (8, 2, 2) ]").unwrap(),
            vec![(16, 10, 5), (16, 3, 2), (16, 10, 5), (16, 3, 2), (8, 2, 2)]
        );
        for bad in [
            "",
            "[]",
            "[(1,2)]",
            "[(1,2,3)] * 100",
            "__import__('os')",
            "[(1,2,3)] - 1",
        ] {
            assert!(parse_conv_layers(bad).is_err(), "{bad}");
        }
    }

    fn fairseq(
        model: serde_json::Value,
        ctc: Option<serde_json::Value>,
    ) -> Result<Wav2Vec2Config, ConfigError> {
        let sections = crate::checkpoint::fairseq::Sections {
            model: model.as_object().unwrap().clone(),
            ctc: ctc.map(|c| c.as_object().unwrap().clone()),
            task: Default::default(),
            form: "cfg",
        };
        from_fairseq(Path::new("x.pt"), &sections, 32)
    }

    #[test]
    fn fairseq_config_maps_to_the_hf_one() {
        let c = fairseq(serde_json::json!({"_name": "wav2vec2"}), None).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.conv_dim.len()),
            (768, 12, 7)
        );
        assert_eq!(c.feat_extract_norm(), FeatExtractNorm::Group);
        assert!(!c.do_stable_layer_norm && !c.conv_bias);
        let c = fairseq(
            serde_json::json!({"extractor_mode": "layer_norm", "layer_norm_first": true,
                "conv_bias": true, "encoder_embed_dim": 1024, "encoder_attention_heads": 16,
                "activation_fn": "gelu_accurate"}),
            Some(serde_json::json!({"_name": "wav2vec_ctc", "mask_prob": 0.25})),
        )
        .unwrap();
        assert_eq!(c.feat_extract_norm(), FeatExtractNorm::Layer);
        assert!(c.do_stable_layer_norm && c.conv_bias);
        assert_eq!(
            (c.hidden_size, c.hidden_act()),
            (1024, Activation::GeluTanh)
        );
        assert_eq!(c.raw["mask_time_prob"], 0.25);
    }

    #[test]
    fn fairseq_refusals_name_field_and_value() {
        for (model, ctc, want) in [
            (
                r#"{"extractor_mode": "batch"}"#,
                None,
                "extractor_mode = \"batch\"",
            ),
            (
                r#"{"layer_type": "conformer"}"#,
                None,
                "layer_type = \"conformer\"",
            ),
            (r#"{"pos_conv_depth": 5}"#, None, "pos_conv_depth = 5"),
            (r#"{"quantize_input": true}"#, None, "quantize_input = true"),
            (
                r#"{"activation_fn": "tanh"}"#,
                None,
                "activation_fn = \"tanh\"",
            ),
            (r#"{"_name": "hubert"}"#, None, "model = \"hubert\""),
            (
                r#"{"conv_feature_layers": "[(1,2)]"}"#,
                None,
                "conv_feature_layers",
            ),
            (
                r#"{"encoder_embed_dim": 10, "encoder_attention_heads": 3}"#,
                None,
                "num_attention_heads",
            ),
            (
                "{}",
                Some(r#"{"_name": "wav2vec_seq2seq"}"#),
                "model = \"wav2vec_seq2seq\"",
            ),
            ("{}", Some(r#"{"blank_weight": 2.0}"#), "blank_weight = 2.0"),
        ] {
            let e = fairseq(
                serde_json::from_str(model).unwrap(),
                ctc.map(|c| serde_json::from_str(c).unwrap()),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{model}: {e}");
        }
    }
}
