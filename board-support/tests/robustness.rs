//! Malformed input never panics: every parser is run on seeded random mutations of the fixture
//! files (truncations, deletions, insertions of format characters, duplications, byte flips).

use std::path::{Path, PathBuf};

use w2v_board_support::platform::{
    arch_from_cpuinfo, parse_cpu_list, parse_cpuinfo, parse_device_tree_string,
    parse_device_tree_string_list, parse_l4t_release, parse_meminfo,
};
use w2v_board_support::provider::default_cache_base_from;
use w2v_board_support::{
    cache_dir, parse_nvpmodel, OptimizationProfile, Platform, ProviderRequest, TegraStats,
};
use w2v_engine::precision::Precision;

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to the parsers, plus some that should not appear at all.
const ALPHABET: &[u8] = b"0123456789%@[](),/:.-x CmWMBkB\t\n\0offRAMCPU#R\xff\xc3\xa9";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(6) {
            0 => out.truncate(rng.below(len + 1)),
            1 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(8.min(len - at));
                out.drain(at..at + n);
            }
            2 => {
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(4) {
                    out.insert(at, ALPHABET[rng.below(ALPHABET.len())]);
                }
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(16.min(len - at));
                let copy = out[at..at + n].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, copy);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                out[at] = rng.next() as u8;
            }
            _ => {
                // Replace a digit run with a huge or negative number.
                if let Some(at) = out.iter().position(|b| b.is_ascii_digit()) {
                    let big: &[u8] = match rng.below(3) {
                        0 => b"99999999999999999999999",
                        1 => b"-256",
                        _ => b"1e40",
                    };
                    out.splice(at..at + 1, big.iter().copied());
                }
            }
        }
    }
    out
}

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Runs every text parser on `bytes`; all that matters is that nothing panics.
fn parse_everything(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().chain([text.as_ref()]) {
        if let Ok(s) = TegraStats::parse_line(line) {
            let _ = (s.cpu_load_avg(), s.temperature("cpu"), s.input_power());
        }
    }
    let _ = TegraStats::parse_lines(&text).count();
    let _ = parse_nvpmodel(&text);
    let _ = parse_l4t_release(&text);
    let cpu = parse_cpuinfo(&text);
    let _ = cpu.has("neon");
    let _ = arch_from_cpuinfo(&text);
    let _ = parse_meminfo(&text);
    let _ = parse_cpu_list(&text);
    let _ = parse_device_tree_string(bytes);
    let _ = parse_device_tree_string_list(bytes);
    let _ = text.parse::<ProviderRequest>();
    let _ = text.parse::<Precision>();
    let _ = cache_dir(Path::new("/c"), &text, &text, &text);
    let _ = default_cache_base_from(Some(text.as_ref().as_ref()), None);
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut files = Vec::new();
    files_under(&data(), &mut files);
    files.sort();
    let mut inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    inputs.extend(
        [
            "NV Power Mode: MAXN\n0\n",
            "NV Power Mode: 15W\n2\n",
            "# R36 (release), REVISION: 4.4, GCID: 38415262, BOARD: generic, EABI: aarch64, DATE: Tue Sep 10 20:31:00 UTC 2024",
            "0-3,5",
        ]
        .map(|s| s.as_bytes().to_vec()),
    );
    assert!(inputs.len() >= 25, "fixtures: {files:?}");

    let mut rng = Rng(0x5eed_b0a2_d5a9_0001);
    for input in &inputs {
        parse_everything(input);
        for _ in 0..300 {
            parse_everything(&mutate(&mut rng, input));
        }
    }
}

#[test]
fn mutated_profiles_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let secs = f64::from_bits(rng.next());
        let sr = rng.next() as u32;
        let rf = rng.next() as usize >> rng.below(64);
        if let Ok(p) = OptimizationProfile::new(secs, sr, rf) {
            assert!(p.min_samples <= p.opt_samples && p.opt_samples <= p.max_samples);
            let _ = p.ort_shapes(&["x"], 1);
        }
        let _ = OptimizationProfile::new(rng.below(100) as f64 / 7.0, 16_000, rng.below(2000));
    }
}

#[test]
fn detect_in_on_a_file_or_odd_root_never_panics() {
    let _ = Platform::detect_in(&data().join("tegrastats/jp4-nano.txt"));
    let _ = Platform::detect_in(Path::new(""));
    let _ = Platform::detect_in(&data());
}
