//! Running any ONNX graph with named float32/int64 tensors in and out.
//!
//! [`crate::Backend`] runs a w2v *model* (audio in, logits out). Training needs to run graphs it
//! generates itself (a forward pass that also returns saved activations, a backward pass), with
//! parameters fed as inputs. [`GraphRunner`] is that lower-level interface, implemented by each
//! backend ([`super::tract::TractGraph`], `super::ort::OrtGraph`) so that only the binary picks
//! the runtime.

use super::BackendError;

/// A host tensor's elements.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor in host memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        HostTensor {
            shape,
            data: TensorData::F32(data),
        }
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        HostTensor {
            shape,
            data: TensorData::I64(data),
        }
    }

    /// The elements, if they are float32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// A borrowed view of this tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: match &self.data {
                TensorData::F32(v) => TensorViewData::F32(v),
                TensorData::I64(v) => TensorViewData::I64(v),
            },
        }
    }
}

/// Borrowed tensor elements.
#[derive(Clone, Copy, Debug)]
pub enum TensorViewData<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

/// A borrowed tensor: what graph inputs are given as (parameters need no copy).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub shape: &'a [usize],
    pub data: TensorViewData<'a>,
}

impl<'a> TensorView<'a> {
    pub fn f32(shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorView {
            shape,
            data: TensorViewData::F32(data),
        }
    }

    pub fn i64(shape: &'a [usize], data: &'a [i64]) -> Self {
        TensorView {
            shape,
            data: TensorViewData::I64(data),
        }
    }

    /// Whether the element count matches the shape.
    pub fn is_consistent(&self) -> bool {
        let n: usize = self.shape.iter().product();
        match self.data {
            TensorViewData::F32(d) => d.len() == n,
            TensorViewData::I64(d) => d.len() == n,
        }
    }
}

/// A loaded ONNX graph that maps named input tensors to its outputs.
pub trait GraphRunner {
    /// A short name for logs and reports ("tract", "ort").
    fn name(&self) -> &'static str;
    /// The graph's input names, in graph order.
    fn input_names(&self) -> &[String];
    /// The graph's output names, in graph order.
    fn output_names(&self) -> &[String];
    /// Run the graph. Every graph input must be given once, by name; the outputs come back in
    /// [`GraphRunner::output_names`] order.
    fn run(&mut self, inputs: &[(&str, TensorView<'_>)]) -> Result<Vec<HostTensor>, BackendError>;
}

/// Check `inputs` against the graph's input names; returns, for each graph input in order, the
/// index of the given tensor.
pub(crate) fn order_inputs(
    backend: &'static str,
    graph_inputs: &[String],
    inputs: &[(&str, TensorView<'_>)],
) -> Result<Vec<usize>, BackendError> {
    let err = |reason: String| BackendError::Run { backend, reason };
    for (name, t) in inputs {
        if !t.is_consistent() {
            return Err(err(format!(
                "input `{name}`: element count does not match shape {:?}",
                t.shape
            )));
        }
        if !graph_inputs.iter().any(|g| g == name) {
            return Err(err(format!("the graph has no input `{name}`")));
        }
    }
    graph_inputs
        .iter()
        .map(|g| {
            inputs
                .iter()
                .position(|(n, _)| n == g)
                .ok_or_else(|| err(format!("input `{g}` not given")))
        })
        .collect()
}
