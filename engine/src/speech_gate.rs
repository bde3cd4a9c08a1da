//! A neural speech gate in front of the command scorer: utterances the energy [`Vad`] cut but
//! that hold no speech (a door, a fan, music without a voice) are dropped before the model runs.
//!
//! The network is Silero VAD (MIT licence, `models/silero_vad.onnx`, the `silero-vad` 6.2.3
//! wheel's `silero_vad_openvino_16k.onnx`: the same weights as its `silero_vad.onnx`, exported
//! without the `If` nodes tract cannot type), embedded in the binary and run on tract whatever
//! backend runs the speech model. It reads 16 kHz audio in chunks of 512 samples, each with the
//! 64 samples before it as context, carries an LSTM state (`[2, 1, 128]`) from chunk to chunk and
//! gives each chunk a speech probability. The gate runs it over an utterance from a reset state
//! and passes the utterance when the highest chunk probability reaches the threshold (Silero's
//! own default is 0.5).
//!
//! Measured on the default model's dev speakers (docs/benchmarks.md): at 0.5 it keeps 98 % of
//! Speech Commands clips and every FSDD digit and drops 98 % of the background-noise clips;
//! about 0.13 ms per 32 ms chunk on one core.
//!
//! [`Vad`]: crate::vad::Vad

use std::path::Path;

use crate::backend::runner::{GraphRunner, TensorView};
use crate::backend::tract::TractGraph;
use crate::backend::{BackendError, BackendOptions};

/// The Silero VAD network (ONNX), as shipped in `models/silero_vad.onnx`.
pub const SILERO_VAD_ONNX: &[u8] = include_bytes!("../../models/silero_vad.onnx");

/// Silero's own default speech threshold, the gate's default.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// The sample rate the network reads.
pub const SAMPLE_RATE: u32 = 16_000;
/// New samples per chunk (32 ms).
pub const CHUNK: usize = 512;
/// Samples of the previous chunk prepended as context.
const CONTEXT: usize = 64;
/// LSTM state: `[2, 1, 128]`.
const STATE: usize = 2 * 128;

/// Silero VAD over whole utterances.
pub struct SpeechGate {
    graph: TractGraph,
    threshold: f32,
}

impl SpeechGate {
    /// The embedded Silero network; utterances pass at a chunk probability of `threshold`.
    pub fn silero(threshold: f32) -> Result<Self, BackendError> {
        let graph = TractGraph::from_bytes(
            &unique_node_names(SILERO_VAD_ONNX)?,
            Path::new("silero_vad.onnx (embedded)"),
            &BackendOptions { threads: Some(1) },
        )?;
        Ok(SpeechGate { graph, threshold })
    }

    /// The probability an utterance must reach somewhere to pass.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Speech probability of each 32 ms chunk of `samples` (16 kHz mono), from a reset state;
    /// a last partial chunk is padded with zeros.
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>, BackendError> {
        let mut state = vec![0f32; STATE];
        let mut input = vec![0f32; CONTEXT + CHUNK];
        let mut out = Vec::with_capacity(samples.len().div_ceil(CHUNK));
        for chunk in samples.chunks(CHUNK) {
            // Context: the last 64 samples of the previous input (zeros at the start).
            input.copy_within(CHUNK.., 0);
            input[CONTEXT..CONTEXT + chunk.len()].copy_from_slice(chunk);
            input[CONTEXT + chunk.len()..].fill(0.0);
            let outputs = self.graph.run(&[
                ("input", TensorView::f32(&[1, CONTEXT + CHUNK], &input)),
                ("state", TensorView::f32(&[2, 1, 128], &state)),
            ])?;
            let bad = || {
                BackendError::Run {
                backend: "tract",
                reason: "silero_vad.onnx: unexpected outputs (want probability [1, 1], state [2, 1, 128])"
                    .into(),
            }
            };
            let [prob, new_state, ..] = outputs.as_slice() else {
                return Err(bad());
            };
            let (Some(&[p]), Some(s)) = (prob.as_f32(), new_state.as_f32()) else {
                return Err(bad());
            };
            if s.len() != STATE {
                return Err(bad());
            }
            out.push(p);
            state.copy_from_slice(s);
        }
        Ok(out)
    }

    /// The highest chunk probability of `samples`, and whether it reaches the threshold.
    pub fn check(&mut self, samples: &[f32]) -> Result<(bool, f32), BackendError> {
        let max = self
            .probabilities(samples)?
            .into_iter()
            .fold(0f32, f32::max);
        Ok((max >= self.threshold, max))
    }
}

/// The model with its node names made unique: the export names three constants `F0::anon`,
/// which tract's optimizer refuses ("duplicate name for node"); the graph is otherwise unchanged.
fn unique_node_names(bytes: &[u8]) -> Result<Vec<u8>, BackendError> {
    use prost::Message;
    let mut model = crate::onnx_pb::ModelProto::decode(bytes).map_err(|e| BackendError::Load {
        backend: "tract",
        path: "silero_vad.onnx (embedded)".into(),
        reason: e.to_string(),
    })?;
    if let Some(graph) = model.graph.as_mut() {
        let mut seen = std::collections::HashSet::new();
        for (i, node) in graph.node.iter_mut().enumerate() {
            if !seen.insert(node.name.clone()) {
                node.name = format!("{}#{i}", node.name);
                seen.insert(node.name.clone());
            }
        }
    }
    Ok(model.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f32, amp: f32) -> Vec<f32> {
        (0..(seconds * SAMPLE_RATE as f32) as usize)
            .map(|i| amp * (i as f32 * 0.07).sin())
            .collect()
    }

    #[test]
    fn silence_and_a_steady_tone_are_not_speech() {
        let mut g = SpeechGate::silero(0.5).unwrap();
        let p = g.probabilities(&vec![0.0; 16_000]).unwrap();
        assert_eq!(p.len(), 32);
        assert!(p.iter().all(|&x| x < 0.1), "{p:?}");
        let (pass, max) = g.check(&tone(1.0, 0.3)).unwrap();
        assert!(!pass, "a 178 Hz tone passed the gate at {max}");
    }

    #[test]
    fn speech_passes() {
        let path = w2v_test_support::paths::sample(w2v_test_support::paths::README_SAMPLE);
        let x = crate::audio::load(&path, SAMPLE_RATE).unwrap();
        let mut g = SpeechGate::silero(0.5).unwrap();
        let (pass, max) = g.check(&x).unwrap();
        assert!(pass && max > 0.9, "{max}");
        // ONNX Runtime's probabilities for the same chunks
        // (tools/fixtures/gen_silero_reference.py).
        let reference = w2v_test_support::paths::repo_root()
            .join("tools/fixtures/silero/zero-zero-six-seven.probs.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
        let want: Vec<f32> = json["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = g.probabilities(&x).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "tract vs ONNX Runtime: max |diff| {worst}");
    }

    #[test]
    fn probabilities_do_not_depend_on_earlier_calls() {
        let mut g = SpeechGate::silero(0.5).unwrap();
        let x = tone(0.5, 0.2);
        let a = g.probabilities(&x).unwrap();
        g.probabilities(&tone(2.0, 0.5)).unwrap();
        assert_eq!(a, g.probabilities(&x).unwrap());
    }
}
