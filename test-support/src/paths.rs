//! Fixture paths shared by several test files. All are absolute, built from this crate's
//! location in the workspace (`<repo>/test-support`), whichever crate's tests ask.

use std::path::{Path, PathBuf};

/// The workspace root: the folder holding the root `Cargo.toml`, `tools/`, `samples/`, `models/`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the workspace root")
        .to_path_buf()
}

/// The fixture checkpoint variants in `tools/fixtures/wav2vec2/` (written by
/// `tools/fixtures/gen_wav2vec2.py`).
pub const WAV2VEC2_VARIANTS: [&str; 4] = [
    "base-safetensors",
    "base-bin-legacy-weight-norm",
    "large-stable-sharded",
    "layer-noprefix-bin",
];

/// `tools/fixtures/wav2vec2/`: the Hugging Face-form fixture checkpoints.
pub fn wav2vec2_fixtures_dir() -> PathBuf {
    repo_root().join("tools/fixtures/wav2vec2")
}

/// One fixture checkpoint folder of `tools/fixtures/wav2vec2/` (see [`WAV2VEC2_VARIANTS`]).
pub fn wav2vec2_fixture(variant: &str) -> PathBuf {
    wav2vec2_fixtures_dir().join(variant)
}

/// Every fixture variant folder of `tools/fixtures/wav2vec2/` (those with a `config.json`),
/// sorted; panics unless there are the four of [`WAV2VEC2_VARIANTS`].
pub fn wav2vec2_fixtures() -> Vec<PathBuf> {
    let root = wav2vec2_fixtures_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        WAV2VEC2_VARIANTS.len(),
        "expected the four fixture variants in {}",
        root.display()
    );
    v
}

/// `tools/fixtures/fairseq/<rel>`: the fairseq checkpoints (`tools/fixtures/gen_fairseq.py`),
/// e.g. `base-cfg` or `base-cfg/checkpoint.pt`.
pub fn fairseq_fixture(rel: &str) -> PathBuf {
    repo_root().join("tools/fixtures/fairseq").join(rel)
}

/// `export/tests/data/pickle/`: the torch.save files of `tools/fixtures/gen_pickle_cases.py`.
pub fn pickle_fixtures_dir() -> PathBuf {
    repo_root().join("export/tests/data/pickle")
}

/// `samples/`: the committed speech samples.
pub fn samples_dir() -> PathBuf {
    repo_root().join("samples")
}

/// `samples/<name>`, e.g. `go-up.wav`.
pub fn sample(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// The README's quick-start sample (in `samples/`), which every front door's tests transcribe, and
/// what the shipped model reads in it (`samples/README.md` says how the clip is chosen).
pub const README_SAMPLE: &str = "zero-zero-six-seven.wav";
/// The shipped model's transcript of [`README_SAMPLE`].
pub const README_TRANSCRIPT: &str = "ZERO ZERO SIX SEVEN";

/// `samples/samples.tsv`: each sample's path (relative to `samples/`) and transcript.
pub fn samples_tsv() -> PathBuf {
    samples_dir().join("samples.tsv")
}

/// `models/`: the shipped default model and its companions.
pub fn models_dir() -> PathBuf {
    repo_root().join("models")
}

/// `models/default.onnx`: the shipped default model (fp32).
pub fn default_model() -> PathBuf {
    models_dir().join("default.onnx")
}

/// `models/default.int8.onnx`: the shipped default model, int8.
pub fn default_int8_model() -> PathBuf {
    models_dir().join("default.int8.onnx")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_fixtures_are_where_the_tests_expect_them() {
        assert!(repo_root().join("Cargo.toml").is_file());
        for variant in WAV2VEC2_VARIANTS {
            assert!(
                wav2vec2_fixture(variant).join("config.json").is_file(),
                "{variant}"
            );
        }
        assert_eq!(wav2vec2_fixtures().len(), WAV2VEC2_VARIANTS.len());
        assert!(fairseq_fixture("base-cfg/checkpoint.pt").is_file());
        assert!(pickle_fixtures_dir().is_dir());
        assert!(samples_tsv().is_file());
        assert!(default_model().is_file());
        assert!(default_int8_model().is_file());
    }
}
