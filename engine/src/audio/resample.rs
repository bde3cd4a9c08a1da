//! Fixed-ratio, band-limited, streaming resampling built on Rubato's FFT resampler.
//!
//! Rubato's `Fft` low-pass filters with a windowed sinc (Blackman-Harris², cutoff just below the
//! lower of the two Nyquist frequencies) and changes the rate by truncating / zero-extending the
//! spectrum of overlapping blocks. This wrapper
//! - picks even FFT block sizes, so the filter delay is a whole number of samples on both sides and
//!   the output is exactly aligned with the input (output sample `j` is at input time
//!   `j * from / to`);
//! - drops that delay from the start of the output and pads the end with zeros on
//!   [`Resampler::flush`], so a stream of `n` input samples gives exactly `round(n * to / from)`
//!   output samples;
//! - accepts input in pieces of any size (a microphone callback's, say) and gives the same samples,
//!   bit for bit, as resampling the whole signal at once.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _, WindowFunction};

/// The smaller FFT block (input or output side) is at least this many samples. Longer blocks move
/// the anti-aliasing cutoff closer to Nyquist (Rubato's fit: 0.979 × Nyquist at 640 samples) at
/// the price of latency: for 44.1 kHz → 16 kHz the blocks are 1764 / 640 samples, i.e. 40 ms.
const MIN_BLOCK: usize = 512;
/// Largest FFT block accepted; only pathological rate pairs (huge coprime rates, or ratios of
/// thousands) come near it.
const MAX_BLOCK: usize = 1 << 22;

/// Why a [`Resampler`] cannot be built for a pair of rates.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("sample rates must be > 0 (got {from} Hz -> {to} Hz)")]
    ZeroRate { from: u32, to: u32 },
    #[error(
        "{from} Hz -> {to} Hz needs an FFT block of {block} samples (the limit is {MAX_BLOCK}); \
         the rates share too small a common divisor"
    )]
    UnsupportedRatio { from: u32, to: u32, block: u64 },
    #[error("cannot build the resampler for {from} Hz -> {to} Hz: {reason}")]
    Construction { from: u32, to: u32, reason: String },
}

/// A streaming resampler from one fixed rate to another.
///
/// Feed input with [`process`](Self::process) (any number of samples per call; output comes out
/// in blocks as soon as enough input has arrived), then call [`flush`](Self::flush) once at the
/// end of the stream for the remaining samples. After `flush` the resampler is reset and may be
/// used for a new stream. When the two rates are equal it copies its input through unchanged.
pub struct Resampler {
    from_rate: u32,
    to_rate: u32,
    /// None when `from_rate == to_rate`.
    inner: Option<Inner>,
    /// Input samples accepted since the stream started.
    consumed: u64,
    /// Output samples returned since the stream started.
    emitted: u64,
}

struct Inner {
    fft: Fft<f32>,
    chunk_in: usize,
    chunk_out: usize,
    /// The filter delay in output samples: this many leading output samples are dropped.
    delay: usize,
    /// Output samples still to be dropped.
    skip: usize,
    /// Input waiting for a full block.
    pending: Vec<f32>,
    /// One block of output.
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Resampler");
        d.field("from_rate", &self.from_rate)
            .field("to_rate", &self.to_rate);
        if let Some(inner) = &self.inner {
            d.field("block_in", &inner.chunk_in)
                .field("block_out", &inner.chunk_out)
                .field("delay_out", &inner.delay);
        }
        d.finish()
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Resampler {
    /// A resampler from `from_rate` Hz to `to_rate` Hz (mono).
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Self, ResampleError> {
        if from_rate == 0 || to_rate == 0 {
            return Err(ResampleError::ZeroRate {
                from: from_rate,
                to: to_rate,
            });
        }
        let inner = if from_rate == to_rate {
            None
        } else {
            Some(Inner::new(from_rate, to_rate)?)
        };
        Ok(Resampler {
            from_rate,
            to_rate,
            inner,
            consumed: 0,
            emitted: 0,
        })
    }

    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// How many input samples must arrive before the first output comes out, and the size of the
    /// steps in which later input is consumed (1 when the rates are equal).
    pub fn input_block(&self) -> usize {
        self.inner.as_ref().map_or(1, |i| i.chunk_in)
    }

    /// Resample the next piece of the stream. Returns the output that is ready so far (possibly
    /// none: input is buffered until a whole block has arrived).
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.process_into(input, &mut out);
        out
    }

    /// Like [`process`](Self::process), appending to `out`.
    pub fn process_into(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let before = out.len();
        self.consumed += input.len() as u64;
        match &mut self.inner {
            None => out.extend_from_slice(input),
            Some(inner) => inner.push(input, out),
        }
        self.emitted += (out.len() - before) as u64;
    }

    /// End the stream: return the remaining output, so that the whole stream produced exactly
    /// `round(n * to / from)` samples for `n` input samples, and reset for a new stream.
    pub fn flush(&mut self) -> Vec<f32> {
        let expected = expected_len(self.consumed, self.from_rate, self.to_rate);
        let mut out = Vec::new();
        if let Some(inner) = &mut self.inner {
            let missing = expected.saturating_sub(self.emitted);
            inner.finish(missing, &mut out);
            inner.reset();
        }
        self.consumed = 0;
        self.emitted = 0;
        out
    }

    /// Forget the current stream without producing its tail.
    pub fn reset(&mut self) {
        if let Some(inner) = &mut self.inner {
            inner.reset();
        }
        self.consumed = 0;
        self.emitted = 0;
    }
}

/// `round(n * to / from)`, halves rounded up.
fn expected_len(n: u64, from: u32, to: u32) -> u64 {
    let num = u128::from(n) * u128::from(to) * 2 + u128::from(from);
    (num / (u128::from(from) * 2)) as u64
}

impl Inner {
    fn new(from_rate: u32, to_rate: u32) -> Result<Self, ResampleError> {
        let g = gcd(u64::from(from_rate), u64::from(to_rate));
        let unit_in = u64::from(from_rate) / g;
        let unit_out = u64::from(to_rate) / g;
        // The block holds k units. k is even so that both block sizes are even and the filter's
        // delay (half a block) is a whole number of samples on both sides.
        let k = MIN_BLOCK.div_ceil(unit_in.min(unit_out) as usize).max(2);
        let k = (k + 1) & !1;
        let block = k as u64 * unit_in.max(unit_out);
        if block > MAX_BLOCK as u64 {
            return Err(ResampleError::UnsupportedRatio {
                from: from_rate,
                to: to_rate,
                block,
            });
        }
        let construction = |reason: String| ResampleError::Construction {
            from: from_rate,
            to: to_rate,
            reason,
        };
        // With FixedSync::Both a chunk of k * unit_in input samples is exactly one FFT block.
        let fft = Fft::<f32>::new_custom(
            from_rate as usize,
            to_rate as usize,
            k * unit_in as usize,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(|e| construction(e.to_string()))?;
        let chunk_in = fft.input_frames_next();
        let chunk_out = fft.output_frames_next();
        let delay = fft.output_delay();
        if chunk_in != k * unit_in as usize
            || chunk_out != k * unit_out as usize
            || fft.fft_size_out() % 2 != 0
            || delay >= chunk_out
        {
            return Err(construction(format!(
                "unexpected block sizes {chunk_in} -> {chunk_out} (delay {delay})"
            )));
        }
        Ok(Inner {
            fft,
            chunk_in,
            chunk_out,
            delay,
            skip: delay,
            pending: Vec::with_capacity(chunk_in),
            scratch: vec![0.0; chunk_out],
        })
    }

    fn push(&mut self, mut input: &[f32], out: &mut Vec<f32>) {
        if !self.pending.is_empty() {
            let take = (self.chunk_in - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == self.chunk_in {
                let block = std::mem::take(&mut self.pending);
                self.run_block(&block, out);
                self.pending = block;
                self.pending.clear();
            }
        }
        while input.len() >= self.chunk_in {
            let (block, rest) = input.split_at(self.chunk_in);
            self.run_block(block, out);
            input = rest;
        }
        self.pending.extend_from_slice(input);
    }

    /// Emit `missing` more output samples, feeding zeros after the buffered input.
    fn finish(&mut self, missing: u64, out: &mut Vec<f32>) {
        let start = out.len();
        let mut block = std::mem::take(&mut self.pending);
        while ((out.len() - start) as u64) < missing {
            block.resize(self.chunk_in, 0.0);
            self.run_block(&block, out);
            block.clear();
        }
        out.truncate(start + missing as usize);
        self.pending = block;
        self.pending.clear();
    }

    fn run_block(&mut self, block: &[f32], out: &mut Vec<f32>) {
        debug_assert_eq!(block.len(), self.chunk_in);
        // The adapters are sized exactly as the resampler asks for, so neither these nor
        // `process_into_buffer` can fail.
        let input = SequentialSlice::new(block, 1, self.chunk_in)
            .expect("input block is exactly one channel of chunk_in samples");
        let mut output = SequentialSlice::new_mut(&mut self.scratch, 1, self.chunk_out)
            .expect("scratch is exactly one channel of chunk_out samples");
        let (_, written) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .expect("buffers are sized as the resampler requires");
        let produced = &self.scratch[..written];
        let drop = self.skip.min(produced.len());
        self.skip -= drop;
        out.extend_from_slice(&produced[drop..]);
    }

    fn reset(&mut self) {
        self.fft.reset();
        self.pending.clear();
        self.skip = self.delay;
    }
}

/// Resample a whole signal from `from_rate` to `to_rate` Hz: a copy when the rates are equal,
/// otherwise exactly `round(samples.len() * to_rate / from_rate)` samples, time-aligned with the
/// input. Same as one [`Resampler::process`] + [`Resampler::flush`].
///
/// Returns an empty vector (and logs a warning) if no [`Resampler`] can be built for the rates
/// (a rate of 0 Hz, or an absurd ratio); [`try_resample`] returns the reason as an error.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    try_resample(samples, from_rate, to_rate).unwrap_or_else(|e| {
        tracing::warn!("resample: {e}");
        Vec::new()
    })
}

/// [`resample`], with the reason as an error when no [`Resampler`] can be built for the rates.
pub fn try_resample(
    samples: &[f32],
    from_rate: u32,
    to_rate: u32,
) -> Result<Vec<f32>, ResampleError> {
    if from_rate == to_rate {
        return Ok(samples.to_vec());
    }
    let mut r = Resampler::new(from_rate, to_rate)?;
    let mut out = r.process(samples);
    out.extend(r.flush());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_len_rounds_half_up() {
        assert_eq!(expected_len(0, 44100, 16000), 0);
        assert_eq!(expected_len(1, 44100, 16000), 0); // 0.36
        assert_eq!(expected_len(2, 44100, 16000), 1); // 0.73
        assert_eq!(expected_len(441, 44100, 16000), 160);
        assert_eq!(expected_len(1, 32000, 16000), 1); // 0.5 rounds up
        assert_eq!(expected_len(3, 8000, 16000), 6);
        assert_eq!(expected_len(u64::MAX / 4, 1, 4), u64::MAX / 4 * 4);
    }

    #[test]
    fn block_sizes_are_even_and_aligned() {
        for (from, to) in [
            (44100, 16000),
            (48000, 16000),
            (8000, 16000),
            (22050, 16000),
            (16000, 44100),
            (11025, 8000),
        ] {
            let r = Resampler::new(from, to).unwrap();
            let inner = r.inner.as_ref().unwrap();
            assert_eq!(inner.chunk_in % 2, 0, "{from}->{to}");
            assert_eq!(inner.chunk_out % 2, 0, "{from}->{to}");
            assert_eq!(inner.delay * 2, inner.chunk_out, "{from}->{to}");
            assert!(
                inner.chunk_in.min(inner.chunk_out) >= MIN_BLOCK,
                "{from}->{to}"
            );
            assert_eq!(
                inner.chunk_in as u64 * u64::from(to),
                inner.chunk_out as u64 * u64::from(from)
            );
        }
    }

    #[test]
    fn bad_rates_are_errors_not_panics() {
        assert!(matches!(
            Resampler::new(0, 16000),
            Err(ResampleError::ZeroRate { .. })
        ));
        assert!(matches!(
            Resampler::new(16000, 0),
            Err(ResampleError::ZeroRate { .. })
        ));
        assert!(matches!(
            Resampler::new(4_000_000_007, 16000),
            Err(ResampleError::UnsupportedRatio { .. })
        ));
        assert!(resample(&[0.0; 10], 0, 16000).is_empty());
        // Equal rates: identity, even for 0 Hz.
        assert_eq!(resample(&[1.0, 2.0], 0, 0), vec![1.0, 2.0]);
    }
}
