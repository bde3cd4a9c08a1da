//! Running a model's [`TrainingGraphs`] on any [`GraphRunner`]: forward, then backward.

use prost::Message;
use w2v_engine::backend::{BackendError, GraphRunner, HostTensor, TensorView};

use crate::autodiff::{Parameter, TrainingGraphs, GRAD_PREFIX, OUTPUT_GRAD};

/// Makes a runner from a serialized ONNX model (the binary decides tract or ONNX Runtime).
pub type RunnerFactory<'a> = dyn Fn(&[u8], &str) -> Result<Box<dyn GraphRunner>, BackendError> + 'a;

/// `inputs` followed by every parameter, named, with its value from `params`.
fn with_params<'a>(
    mut inputs: Vec<(&'a str, TensorView<'a>)>,
    parameters: &'a [Parameter],
    params: &'a [Vec<f32>],
) -> Vec<(&'a str, TensorView<'a>)> {
    for (p, v) in parameters.iter().zip(params) {
        inputs.push((p.name.as_str(), TensorView::f32(&p.shape, v)));
    }
    inputs
}

/// The forward pass's results, kept for the backward pass.
pub struct ForwardPass {
    /// The differentiated output (the logits).
    pub output: HostTensor,
    saved: Vec<HostTensor>,
}

/// A model's forward and backward graphs, loaded.
pub struct GradientRunner {
    graphs: TrainingGraphs,
    forward: Box<dyn GraphRunner>,
    backward: Box<dyn GraphRunner>,
}

impl GradientRunner {
    pub fn new(graphs: TrainingGraphs, make: &RunnerFactory<'_>) -> Result<Self, BackendError> {
        let forward = make(&graphs.forward.encode_to_vec(), "forward")?;
        let backward = make(&graphs.backward.encode_to_vec(), "backward")?;
        Ok(GradientRunner {
            graphs,
            forward,
            backward,
        })
    }

    pub fn parameters(&self) -> &[Parameter] {
        &self.graphs.parameters
    }

    pub fn graphs(&self) -> &TrainingGraphs {
        &self.graphs
    }

    /// Run the forward graph: `model_inputs` (e.g. `input_values`) and the parameter values, in
    /// [`GradientRunner::parameters`] order.
    pub fn forward(
        &mut self,
        model_inputs: &[(&str, TensorView<'_>)],
        params: &[Vec<f32>],
    ) -> Result<ForwardPass, BackendError> {
        let inputs = with_params(model_inputs.to_vec(), &self.graphs.parameters, params);
        let mut out = self.forward.run(&inputs)?.into_iter();
        let output = out.next().ok_or_else(|| BackendError::Run {
            backend: self.forward.name(),
            reason: "the forward graph returned nothing".into(),
        })?;
        Ok(ForwardPass {
            output,
            saved: out.collect(),
        })
    }

    /// Run the backward graph for upstream gradient `output_grad` (shaped like the output);
    /// returns each parameter's gradient, in [`GradientRunner::parameters`] order.
    pub fn backward(
        &mut self,
        fwd: &ForwardPass,
        output_grad: &[f32],
        model_inputs: &[(&str, TensorView<'_>)],
        params: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let g = &self.graphs;
        let mut inputs: Vec<(&str, TensorView<'_>)> =
            vec![(OUTPUT_GRAD, TensorView::f32(&fwd.output.shape, output_grad))];
        for (name, t) in g.saved.iter().zip(&fwd.saved) {
            inputs.push((name.as_str(), t.view()));
        }
        if g.backward_takes_output {
            inputs.push((g.output.as_str(), fwd.output.view()));
        }
        for name in &g.backward_model_inputs {
            if let Some(i) = model_inputs.iter().find(|(n, _)| n == name) {
                inputs.push(*i);
            }
        }
        let inputs = with_params(inputs, &g.parameters, params);
        let out = self.backward.run(&inputs)?;
        let names = self.backward.output_names().to_vec();
        let mut grads = Vec::with_capacity(g.parameters.len());
        for p in &g.parameters {
            let want = format!("{GRAD_PREFIX}{}", p.name);
            let t = names
                .iter()
                .position(|n| *n == want)
                .and_then(|i| out.get(i))
                .and_then(HostTensor::as_f32)
                .ok_or_else(|| BackendError::Run {
                    backend: self.backward.name(),
                    reason: format!("the backward graph returned no `{want}`"),
                })?;
            grads.push(t.to_vec());
        }
        Ok(grads)
    }
}
