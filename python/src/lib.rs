//! The native half of the `w2v` Python package (`w2v._w2v`): the library's [`w2v::Recognizer`]
//! and exporter behind PyO3. `python/w2v/__init__.py` is the public face: it turns numpy arrays
//! into the float32 bytes taken here, and carries the docstrings and type hints.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use w2v::engine::precision::{Precision, QuantizationTarget};
use w2v::export::{CalibrationMethod, ExportOptions};
use w2v::{BackendKind, DecoderOptions, Options, ProviderRequest, RuntimeOptions};

create_exception!(
    w2v,
    W2vError,
    PyException,
    "An error from w2v: a model, audio or decoder file that cannot be read or used, or a runtime \
     failure. The message is one line and names the file or option at fault."
);

/// A library error as `W2vError`, with its one-line message.
fn w2v_error(message: String) -> PyErr {
    W2vError::new_err(message)
}

/// The library's recognizer (`Send`: the library keeps its backend as
/// `Box<dyn Backend + Send>` and asserts it), used behind `PyRecognizer::engine`'s mutex, one
/// thread at a time.
struct Engine(w2v::Recognizer);

/// A word of a transcript: its text, start and end in seconds from the start of the audio, and
/// the model's confidence in it (0 to 1).
#[pyclass(module = "w2v", frozen, get_all)]
#[derive(Clone)]
struct Word {
    text: String,
    start: f64,
    end: f64,
    confidence: f32,
}

#[pymethods]
impl Word {
    fn __repr__(&self) -> String {
        format!(
            "Word(text={}, start={:.2}, end={:.2}, confidence={:.2})",
            py_str(&self.text),
            self.start,
            self.end,
            self.confidence
        )
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }
}

/// A transcript: its text, its words with times and confidences, the audio's duration in
/// seconds, the model's compute time and their ratio (the real-time factor).
#[pyclass(module = "w2v", frozen, get_all)]
struct Transcript {
    text: String,
    words: Vec<Word>,
    duration: f64,
    compute_seconds: f64,
    real_time_factor: f64,
}

#[pymethods]
impl Transcript {
    fn __repr__(&self) -> String {
        format!(
            "Transcript(text={}, words={}, duration={:.2}, real_time_factor={:.3})",
            py_str(&self.text),
            self.words.len(),
            self.duration,
            self.real_time_factor
        )
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }
}

impl From<w2v::Transcript> for Transcript {
    fn from(t: w2v::Transcript) -> Self {
        Transcript {
            text: t.text,
            words: t
                .words
                .into_iter()
                .map(|w| Word {
                    text: w.text,
                    start: w.start,
                    end: w.end,
                    confidence: w.confidence,
                })
                .collect(),
            duration: t.duration,
            compute_seconds: t.compute_seconds,
            real_time_factor: t.real_time_factor,
        }
    }
}

/// `s` as a Python string literal (single quotes; transcripts are plain text).
fn py_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One model on one runtime (see `w2v.Recognizer`). Calls from several threads take turns; the
/// GIL is released while a call runs.
#[pyclass(module = "w2v._w2v", name = "Recognizer", frozen)]
struct PyRecognizer {
    engine: Mutex<Engine>,
    sample_rate: u32,
    model_path: PathBuf,
    backend: &'static str,
    decoding: &'static str,
    execution_providers: Vec<String>,
}

impl PyRecognizer {
    /// Run `f` on the recognizer with the GIL released; errors become `W2vError`.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut w2v::Recognizer) -> w2v::Result<T> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| {
            let mut engine = self.engine.lock().map_err(|_| {
                "this Recognizer failed inside an earlier call (a panic); open a new one"
                    .to_string()
            })?;
            f(&mut engine.0).map_err(|e| e.to_string())
        })
        .map_err(w2v_error)
    }
}

#[pymethods]
impl PyRecognizer {
    #[new]
    #[pyo3(signature = (model=None, backend="tract", provider="auto", threads=None, words=None, lm=None, hotwords=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        backend: &str,
        provider: &str,
        threads: Option<usize>,
        words: Option<PathBuf>,
        lm: Option<PathBuf>,
        hotwords: Option<PathBuf>,
    ) -> PyResult<Self> {
        let backend: BackendKind = backend
            .parse()
            .map_err(|e: w2v::Error| PyValueError::new_err(e.to_string()))?;
        let provider: ProviderRequest = provider.parse().map_err(|_| {
            PyValueError::new_err(format!(
                "unknown provider {provider:?}: expected auto, cpu, cuda or tensorrt"
            ))
        })?;
        if threads == Some(0) {
            return Err(PyValueError::new_err(
                "threads must be at least 1 (None lets the runtime decide)",
            ));
        }
        let options = Options {
            runtime: RuntimeOptions {
                backend,
                provider,
                threads,
                ..RuntimeOptions::default()
            },
            decoder: DecoderOptions {
                words,
                lm,
                hotwords,
                ..DecoderOptions::default()
            },
            ..Options::default()
        };
        let engine = py
            .allow_threads(|| {
                match model {
                    Some(path) => w2v::Recognizer::open(path, &options),
                    None => w2v::Recognizer::open_default(&options),
                }
                .map(Engine)
                .map_err(|e| e.to_string())
            })
            .map_err(w2v_error)?;
        let r = &engine.0;
        Ok(PyRecognizer {
            sample_rate: r.sample_rate(),
            model_path: r.model_path().to_path_buf(),
            backend: r.backend_name(),
            decoding: r.decoding(),
            execution_providers: r
                .execution_providers()
                .iter()
                .map(|p| p.to_string())
                .collect(),
            engine: Mutex::new(engine),
        })
    }

    /// Transcribe native-endian float32 samples (`numpy.ndarray.tobytes()`) at `sample_rate` Hz.
    fn transcribe(&self, py: Python<'_>, samples: &[u8], sample_rate: u32) -> PyResult<Transcript> {
        if !samples.len().is_multiple_of(4) {
            return Err(PyValueError::new_err(format!(
                "samples: {} bytes is not a whole number of float32 samples",
                samples.len()
            )));
        }
        if sample_rate == 0 {
            return Err(PyValueError::new_err("sample_rate must be positive"));
        }
        let samples: Vec<f32> = samples
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = self.run(py, |r| r.transcribe(&samples, sample_rate))?;
        Ok(t.into())
    }

    fn transcribe_file(&self, py: Python<'_>, path: PathBuf) -> PyResult<Transcript> {
        let t = self.run(py, |r| r.transcribe_file(&path))?;
        Ok(t.into())
    }

    #[getter]
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    #[getter]
    fn model_path(&self) -> PathBuf {
        self.model_path.clone()
    }

    #[getter]
    fn backend(&self) -> &'static str {
        self.backend
    }

    #[getter]
    fn decoding(&self) -> &'static str {
        self.decoding
    }

    #[getter]
    fn execution_providers(&self) -> Vec<String> {
        self.execution_providers.clone()
    }
}

/// Decode an audio file to mono float32 samples (native-endian bytes) at `sample_rate` Hz.
#[pyfunction]
fn load_audio(py: Python<'_>, path: PathBuf, sample_rate: u32) -> PyResult<Vec<u8>> {
    if sample_rate == 0 {
        return Err(PyValueError::new_err("sample_rate must be positive"));
    }
    let samples = py
        .allow_threads(|| w2v::load_audio(&path, sample_rate).map_err(|e| e.to_string()))
        .map_err(w2v_error)?;
    Ok(samples.iter().flat_map(|s| s.to_ne_bytes()).collect())
}

/// Export a checkpoint to ONNX; returns the summary as JSON (`w2v export --json`'s fields).
#[pyfunction]
#[pyo3(signature = (input, output, precision="fp32", target="cpu", opset=None, quantize_conv=false, eval=None, calibration=None, calibration_method="percentile", max_wer_increase=None, skip_report=false, dict=None, fp16_weights=false))]
#[allow(clippy::too_many_arguments)]
fn export(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    precision: &str,
    target: &str,
    opset: Option<i64>,
    quantize_conv: bool,
    eval: Option<PathBuf>,
    calibration: Option<PathBuf>,
    calibration_method: &str,
    max_wer_increase: Option<f64>,
    skip_report: bool,
    dict: Option<PathBuf>,
    fp16_weights: bool,
) -> PyResult<String> {
    let value_error = |e: &dyn std::fmt::Display| PyValueError::new_err(e.to_string());
    let precision: Precision = precision.parse().map_err(|e| value_error(&e))?;
    let target: QuantizationTarget = target.parse().map_err(|e| value_error(&e))?;
    let calibration_method: CalibrationMethod =
        calibration_method.parse().map_err(|e| value_error(&e))?;
    let options = ExportOptions {
        opset,
        precision,
        target,
        quantize_conv,
        eval,
        calibration,
        calibration_method,
        max_wer_increase,
        skip_report,
        dict,
        fp16_weights,
        ..ExportOptions::default()
    };
    py.allow_threads(|| {
        let summary = w2v::export::export(&input, &output, &options).map_err(|e| e.to_string())?;
        serde_json::to_string(&summary).map_err(|e| format!("export summary: {e}"))
    })
    .map_err(w2v_error)
}

#[pymodule]
fn _w2v(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("W2vError", m.py().get_type::<W2vError>())?;
    m.add_class::<PyRecognizer>()?;
    m.add_class::<Transcript>()?;
    m.add_class::<Word>()?;
    m.add_function(wrap_pyfunction!(load_audio, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    Ok(())
}
