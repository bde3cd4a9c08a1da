//! Shared helpers for the end-to-end CLI tests: running the real `w2v` binary, checking its
//! one-line errors, and tiny writers for the file formats the tests forge (safetensors, WAV, a
//! bare ONNX `ModelProto`). Fixture paths and tolerances come from `w2v-test-support`, shared with
//! the crates' tests; the ones these tests use everywhere are re-exported here.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fixture checkpoint variants in `tools/fixtures/wav2vec2/`.
pub const VARIANTS: [&str; 4] = w2v_test_support::paths::WAV2VEC2_VARIANTS;

/// The workspace root (the root package's manifest folder).
pub use w2v_test_support::paths::repo_root as repo;
/// A fixture checkpoint folder.
pub use w2v_test_support::paths::wav2vec2_fixture as fixture;

/// `../shared/data`, absolute.
pub fn shared_data() -> PathBuf {
    let p = repo().join("../shared/data");
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: real speech data is missing: {e}", p.display()))
}

/// A real speech file from `../shared/data`, absolute.
pub fn speech(rel: &str) -> PathBuf {
    let p = shared_data().join(rel);
    assert!(p.is_file(), "{}: missing speech file", p.display());
    p
}

/// `w2v transcribe --model model` succeeds on a real speech clip.
pub fn assert_transcribes(model: &Path) {
    transcribe_text(model, &speech("fsdd/0_george_0.wav"));
}

/// `w2v transcribe --model model audio`, which must succeed: its standard output.
pub fn transcribe_text(model: &Path, audio: &Path) -> String {
    let run = w2v([
        "transcribe".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        audio.as_os_str(),
    ]);
    assert_ok(&run);
    run.stdout
}

/// `w2v export src -o out` with `extra` arguments.
pub fn export_run(src: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "export".as_ref(),
        src.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    w2v(args)
}

/// The outcome of one `w2v` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Run the real binary with `args` in the repository root (so `.ort/lib` is found), without
/// any environment that would change its logging, default model or ONNX Runtime library.
pub fn w2v<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    w2v_with_env(args, &[])
}

/// [`w2v`] with extra environment variables.
pub fn w2v_with_env<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_w2v(args, env, None)
}

/// [`w2v`] with `input` on its standard input (written from another thread, so a binary that
/// stops reading early cannot deadlock the test).
pub fn w2v_with_stdin<I, S>(args: I, input: Vec<u8>) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_w2v(args, &[], Some(input))
}

fn run_w2v<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)], input: Option<Vec<u8>>) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_w2v"));
    cmd.args(&args)
        .current_dir(repo())
        .env_remove("W2V_LOG")
        .env_remove("W2V_MODEL")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("RUST_BACKTRACE")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run w2v");
    let writer = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            // A binary that rejects its input may close the pipe early: not the test's error.
            let _ = std::io::Write::write_all(&mut stdin, &bytes);
        })
    });
    let out = child.wait_with_output().expect("run w2v");
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    Run {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A path as the binary prints it (`Path::display`).
pub fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Assert a run succeeded cleanly: exit 0, nothing on stderr.
pub fn assert_ok(run: &Run) {
    assert!(
        run.success(),
        "w2v {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        run.args,
        run.code,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.trim().is_empty(),
        "w2v {:?} succeeded but wrote to stderr: {}",
        run.args,
        run.stderr
    );
}

/// Check one `error:` line: it names everything in `must_contain`, and does not repeat a cause
/// (`a: b: b`, which is what printing an error's source twice looks like).
pub fn check_error_line(run: &Run, line: &str, must_contain: &[&str]) {
    assert!(
        line.starts_with("error: "),
        "w2v {:?}: error line does not start with `error: `: {line:?}\nstderr: {}",
        run.args,
        run.stderr
    );
    for want in must_contain {
        assert!(
            line.contains(want),
            "w2v {:?}: error line does not mention {want:?}: {line:?}",
            run.args
        );
    }
    let parts: Vec<&str> = line.split(": ").collect();
    for pair in parts.windows(2) {
        assert!(
            pair[0] != pair[1],
            "w2v {:?}: error line repeats {:?}: {line:?}",
            run.args,
            pair[0]
        );
    }
}

/// Assert no panic text and no terminal escape codes on either stream.
pub fn assert_no_panic(run: &Run) {
    for (name, s) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !s.contains("panicked") && !s.contains("RUST_BACKTRACE"),
            "w2v {:?} panicked ({name}): {s}",
            run.args
        );
        assert!(
            !s.contains('\u{1b}'),
            "w2v {:?}: escape codes on {name} (not a terminal): {s:?}",
            run.args
        );
    }
}

/// Assert a run failed with exactly one stderr line, `error: ...`, naming everything in
/// `must_contain`. Returns the line.
pub fn assert_one_error(run: &Run, must_contain: &[&str]) -> String {
    assert!(
        !run.success() && run.code.is_some(),
        "w2v {:?} should have failed with an exit status, got {:?}\nstdout: {}\nstderr: {}",
        run.args,
        run.code,
        run.stdout,
        run.stderr
    );
    assert_no_panic(run);
    let lines = run.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "w2v {:?}: expected exactly one stderr line, got {}:\n{}",
        run.args,
        lines.len(),
        run.stderr
    );
    check_error_line(run, lines[0], must_contain);
    lines[0].to_string()
}

/// `transcribe`'s failures: one `error:` line per failed file (in order), each naming its file
/// and the phrases given, then the summary line `N of M files failed: a, b`. Non-zero exit.
pub fn assert_transcribe_failures(run: &Run, failed: &[(&Path, &[&str])], total: usize) {
    assert!(
        !run.success() && run.code.is_some(),
        "w2v {:?} should have failed, got {:?}\nstdout: {}\nstderr: {}",
        run.args,
        run.code,
        run.stdout,
        run.stderr
    );
    assert_no_panic(run);
    let lines = run.stderr_lines();
    assert_eq!(
        lines.len(),
        failed.len() + 1,
        "w2v {:?}: expected {} error lines and a summary, got:\n{}",
        run.args,
        failed.len(),
        run.stderr
    );
    for ((path, phrases), line) in failed.iter().zip(&lines) {
        let name = shown(path);
        let mut want = vec![name.as_str()];
        want.extend_from_slice(phrases);
        check_error_line(run, line, &want);
        assert!(
            line.starts_with(&format!("error: {name}")),
            "w2v {:?}: error line should start with the file name {name}: {line:?}",
            run.args
        );
    }
    let names: Vec<String> = failed.iter().map(|(p, _)| shown(p)).collect();
    let summary = format!(
        "{} of {} files failed: {}",
        failed.len(),
        total,
        names.join(", ")
    );
    assert_eq!(
        *lines.last().unwrap(),
        summary,
        "w2v {:?}: summary line",
        run.args
    );
}

/// The names in a folder (including hidden temp files), sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn assert_dir_empty(dir: &Path) {
    let entries = dir_entries(dir);
    assert!(
        entries.is_empty(),
        "{}: should be empty after a failure, holds {entries:?}",
        dir.display()
    );
}

/// Copy a folder (flat: fixture folders have no subfolders).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// A copy of a fixture checkpoint in `parent/name`, to break.
pub fn fixture_copy(variant: &str, parent: &Path, name: &str) -> PathBuf {
    let dst = parent.join(name);
    copy_dir(&fixture(variant), &dst);
    dst
}

/// Export a fixture to `dir/<variant>.onnx` and return the model path.
pub fn export_fixture(variant: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{variant}.onnx"));
    let run = w2v([
        "export".as_ref(),
        fixture(variant).as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_ok(&run);
    assert!(out.is_file());
    out
}

pub fn parse_json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "w2v {:?}: stdout is not JSON ({e}):\n{}",
            run.args, run.stdout
        )
    })
}

// ---------------------------------------------------------------------------------------------
// safetensors

#[derive(Clone, Debug, PartialEq)]
pub struct StTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read a safetensors file: 8-byte little-endian header length, JSON header, data.
pub fn read_safetensors(path: &Path) -> Vec<StTensor> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out: Vec<StTensor> = header
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(name, v)| {
            let off = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                off[0].as_u64().unwrap() as usize,
                off[1].as_u64().unwrap() as usize,
            );
            StTensor {
                name: name.clone(),
                dtype: v["dtype"].as_str().unwrap().to_string(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                data: data[a..b].to_vec(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Write tensors as a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[StTensor]) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    // The format asks for a header padded (with spaces) to a multiple of 8.
    let padded = h.len().div_ceil(8) * 8;
    h.resize(padded, b' ');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    for t in tensors {
        bytes.extend_from_slice(&t.data);
    }
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// WAV

/// A RIFF/WAVE file with the given `fmt ` fields and `data` payload.
pub fn wav_bytes(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block_align = channels * bits.div_ceil(8);
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&format_tag.to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    fmt.extend_from_slice(&block_align.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    if format_tag != 1 {
        fmt.extend_from_slice(&0u16.to_le_bytes()); // cbSize
    }
    let mut body = b"WAVE".to_vec();
    body.extend_from_slice(b"fmt ");
    body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    if data.len() % 2 == 1 {
        body.push(0);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// 16-bit PCM mono WAV.
pub fn pcm16_wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav_bytes(1, 1, rate, 16, &data)
}

/// 32-bit float mono WAV (format tag 3).
pub fn f32_wav(rate: u32, samples: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    wav_bytes(3, 1, rate, 32, &data)
}

/// A 440 Hz tone, `seconds` long.
pub fn tone(rate: u32, seconds: f64) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| {
            (0.3 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin()) as f32
        })
        .collect()
}

/// Duration in seconds of a PCM WAV file, from its `fmt ` and `data` chunks.
pub fn wav_duration(path: &Path) -> f64 {
    let b = std::fs::read(path).unwrap();
    assert!(
        &b[..4] == b"RIFF" && &b[8..12] == b"WAVE",
        "{}",
        path.display()
    );
    let (mut pos, mut rate, mut align) = (12usize, 0u32, 0u16);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            rate = u32::from_le_bytes(b[body + 4..body + 8].try_into().unwrap());
            align = u16::from_le_bytes(b[body + 12..body + 14].try_into().unwrap());
        } else if id == b"data" {
            let len = len.min(b.len() - body);
            assert!(rate > 0 && align > 0, "{}: data before fmt", path.display());
            return (len / usize::from(align)) as f64 / f64::from(rate);
        }
        pos = body + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

// ---------------------------------------------------------------------------------------------
// Protobuf (enough of it to write an ONNX ModelProto header by hand)

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn pb_varint(field: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3, out);
    varint(v, out);
}

pub fn pb_bytes(field: u32, v: &[u8], out: &mut Vec<u8>) {
    varint((u64::from(field) << 3) | 2, out);
    varint(v.len() as u64, out);
    out.extend_from_slice(v);
}

/// A valid ONNX `ModelProto` header (IR version 8, opset 17, a producer and `metadata_props`)
/// with no graph and none of w2v's metadata.
pub fn bare_onnx(props: &[(&str, &str)]) -> Vec<u8> {
    let mut m = Vec::new();
    pb_varint(1, 8, &mut m); // ir_version
    pb_bytes(2, b"someone-else", &mut m); // producer_name
    let mut opset = Vec::new();
    pb_bytes(1, b"", &mut opset); // domain
    pb_varint(2, 17, &mut opset); // version
    pb_bytes(8, &opset, &mut m); // opset_import
    for (k, v) in props {
        let mut e = Vec::new();
        pb_bytes(1, k.as_bytes(), &mut e);
        pb_bytes(2, v.as_bytes(), &mut e);
        pb_bytes(14, &e, &mut m); // metadata_props
    }
    m
}
pub mod stream;
