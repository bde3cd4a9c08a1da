//! Chunked transcription must reproduce whole-file results exactly for a model whose frames
//! depend only on their receptive field, and batches must equal single runs.

use w2v_engine::backend::{Backend, BackendError, Batch, Logits};
use w2v_engine::model_info::{ModelInfo, FORMAT_VERSION, MODEL_TYPE_WAV2VEC2_CTC};
use w2v_engine::transcriber::{ChunkPlan, Transcriber};

fn info() -> ModelInfo {
    ModelInfo {
        format_version: FORMAT_VERSION,
        model_type: MODEL_TYPE_WAV2VEC2_CTC.into(),
        config: serde_json::json!({
            "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]
        }),
        vocab: vec!["<pad>".into(), "|".into(), "A".into(), "B".into()],
        sample_rate: 16000,
        do_normalize: false,
        frame_stride: 320,
        receptive_field: 400,
        uses_attention_mask: false,
        pad_token_id: 0,
        word_delimiter_token: Some("|".into()),
        precision: "fp32".into(),
        source_sha256: String::new(),
        exporter_version: String::new(),
        raw: Default::default(),
    }
}

/// A "model" whose frame f sees exactly samples [320 f, 320 f + 400), like the conv front end.
struct LocalModel {
    info: ModelInfo,
    calls: Vec<(usize, usize)>,
}

impl Backend for LocalModel {
    fn name(&self) -> &'static str {
        "local"
    }
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn run(&mut self, batch: &Batch<'_>) -> Result<Logits, BackendError> {
        self.calls.push((batch.batch, batch.len));
        let frames = self.info.frames_for_samples(batch.len);
        let vocab = self.info.vocab.len();
        let mut data = Vec::with_capacity(batch.batch * frames * vocab);
        for b in 0..batch.batch {
            let row = &batch.samples[b * batch.len..(b + 1) * batch.len];
            for f in 0..frames {
                let field = &row[f * 320..f * 320 + 400];
                let energy: f32 = field.iter().map(|x| x * x).sum::<f32>() / 400.0;
                let sign: f32 = field.iter().sum();
                // "|" for silence, A or B by the field's sign for loud.
                let mut l = vec![0.0f32; vocab];
                if energy < 0.01 {
                    l[1] = 5.0;
                } else if sign >= 0.0 {
                    l[2] = 5.0 + energy;
                } else {
                    l[3] = 5.0 + energy;
                }
                data.extend(l);
            }
        }
        Ok(Logits {
            data,
            batch: batch.batch,
            frames,
            vocab,
        })
    }
}

/// 47 s of bursts of tones and silence: many words, some on any seam.
fn long_audio() -> Vec<f32> {
    let mut x = Vec::new();
    let mut seed = 12345u32;
    while x.len() < 47 * 16000 {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        let len = 1600 + (seed >> 20) as usize * 3;
        let amp = if (seed >> 8).is_multiple_of(3) {
            0.0
        } else {
            0.5
        };
        let freq = 100.0 + (seed % 700) as f32;
        x.extend((0..len).map(|i| amp * (i as f32 * freq * std::f32::consts::TAU / 16000.0).sin()));
    }
    x
}

#[test]
fn chunked_logits_equal_whole_file_logits() {
    let audio = long_audio();
    let mut whole = Transcriber::new(LocalModel {
        info: info(),
        calls: vec![],
    });
    whole.plan = ChunkPlan {
        chunk_seconds: 60.0,
        overlap_seconds: 2.0,
    };
    let reference = whole.logits(&audio).unwrap();
    assert_eq!(reference.frames, info().frames_for_samples(audio.len()));

    for (chunk, overlap) in [(10.0, 1.0), (7.3, 0.5), (30.0, 2.0), (4.0, 1.5)] {
        let mut t = Transcriber::new(LocalModel {
            info: info(),
            calls: vec![],
        });
        t.plan = ChunkPlan {
            chunk_seconds: chunk,
            overlap_seconds: overlap,
        };
        let got = t.logits(&audio).unwrap();
        assert_eq!(
            got.frames, reference.frames,
            "chunk {chunk}s overlap {overlap}s"
        );
        assert_eq!(
            got.data, reference.data,
            "chunk {chunk}s overlap {overlap}s"
        );
        let tr = t.transcribe(&audio).unwrap();
        let tw = whole.transcribe(&audio).unwrap();
        assert_eq!(tr.text, tw.text);
        assert_eq!(tr.words, tw.words);
        assert!(tr.words.len() > 20, "the test audio should have many words");
    }
}

#[test]
fn batch_equals_single_runs() {
    let audio = long_audio();
    let clips: Vec<&[f32]> = vec![&audio[..16000], &audio[16000..40000], &audio[50000..53000]];
    for uses_mask in [false, true] {
        let mut i = info();
        i.uses_attention_mask = uses_mask;
        let mut t = Transcriber::new(LocalModel {
            info: i,
            calls: vec![],
        });
        let batched = t.transcribe_batch(&clips).unwrap();
        for (clip, b) in clips.iter().zip(&batched) {
            let single = t.transcribe(clip).unwrap();
            assert_eq!(single.text, b.text);
            assert_eq!(single.words, b.words);
            assert_eq!(single.duration, b.duration);
        }
    }
}
