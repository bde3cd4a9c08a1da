//! A model's numeric precision and, for int8 models, the runtime its quantization is laid out
//! for: one definition for the exporter that chooses them, the metadata that records them
//! ([`crate::model_info::keys::PRECISION`], [`crate::model_info::keys::QUANTIZATION_TARGET`]),
//! the execution-provider policy that reads them back, and the command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Numeric precision of a model (`w2v.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Int8,
}

/// The runtime an int8 model's quantization is laid out for (`w2v.quantization.target`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizationTarget {
    /// Dynamic quantization (`DynamicQuantizeLinear` + `MatMulInteger`): ONNX Runtime CPU,
    /// tract. TensorRT cannot run those nodes; ONNX Runtime gives them to CUDA or the CPU.
    #[default]
    Cpu,
    /// Explicit symmetric QDQ pairs with calibrated activation scales: TensorRT's explicit int8
    /// quantization.
    TensorRt,
}

/// A precision or quantization target that is not one of the names above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown model precision {0:?}: expected fp32, fp16 or int8")]
    Precision(String),
    #[error("unknown quantization target {0:?}: expected cpu or tensorrt")]
    QuantizationTarget(String),
}

impl Precision {
    /// Every precision, in the order the command line lists them.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];

    /// The name the metadata and the command line use.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

impl QuantizationTarget {
    /// Every target, in the order the command line lists them.
    pub const ALL: [QuantizationTarget; 2] =
        [QuantizationTarget::Cpu, QuantizationTarget::TensorRt];

    /// The name the metadata and the command line use.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantizationTarget::Cpu => "cpu",
            QuantizationTarget::TensorRt => "tensorrt",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for QuantizationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Case-insensitive, surrounding whitespace ignored (metadata may have been edited by hand).
impl FromStr for Precision {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseError::Precision(s.to_string()))
    }
}

/// Case-insensitive, surrounding whitespace ignored.
impl FromStr for QuantizationTarget {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        QuantizationTarget::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseError::QuantizationTarget(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for q in QuantizationTarget::ALL {
            assert_eq!(q.to_string().parse::<QuantizationTarget>(), Ok(q));
            assert_eq!(serde_json::to_value(q).unwrap(), q.as_str());
        }
        assert_eq!(" INT8 ".parse::<Precision>(), Ok(Precision::Int8));
        assert_eq!(
            "bf16".parse::<Precision>(),
            Err(ParseError::Precision("bf16".into()))
        );
        assert_eq!(
            "gpu".parse::<QuantizationTarget>(),
            Err(ParseError::QuantizationTarget("gpu".into()))
        );
        assert_eq!(Precision::default(), Precision::Fp32);
        assert_eq!(QuantizationTarget::default(), QuantizationTarget::Cpu);
    }
}
