//! `quantize_gguf` against llama.cpp's own quantizer (`llama_model_quantize`, no importance
//! matrix): for every fixture model, quantizing llama.cpp's F32 GGUF to Q8_0 and Q4_K_M must
//! give llama.cpp's Q8_0 / Q4_K_M file (`fixtures/gguf/<name>/<name>-<type>.gguf`, made by
//! `fixtures/gguf/make_gguf.py`) byte for byte: same metadata, same tensor order, same type per
//! tensor (the Q4_K_M mix with its Q5_0/Q5_1/Q8_0/F16 fallbacks for narrow rows), same data.
//! On a difference the test lists every tensor whose type or bytes differ.

use frugal_formats::gguf::GgufModel;
use frugal_formats::TensorSource;
use frugal_model::quant_plan::Preset;
use frugal_model::quantize_gguf::quantize_gguf;

const FIXTURES: [&str; 7] = [
    "deepseek-v3",
    "deepseek-v2-lite",
    "deepseek-v2",
    "qwen2",
    "llama",
    "qwen3-moe",
    "mixtral",
];

fn check(name: &str, preset: Preset) -> (usize, usize) {
    let dir = frugal_testdata::fixtures_dir().join("gguf").join(name);
    let src = GgufModel::open(dir.join(format!("{name}-F32.gguf"))).expect("F32 fixture opens");
    let want_path = dir.join(format!("{name}-{}.gguf", preset.name()));
    let mut ours = Vec::new();
    let report = quantize_gguf(&src, preset, &mut ours, 2, &mut |_, _, _| {}).expect("quantizes");
    assert_eq!(report.file_bytes as usize, ours.len());
    let want = std::fs::read(&want_path).expect("llama.cpp's file is committed");
    if ours == want {
        return (report.tensors.len(), report.tensors.len());
    }
    // Say what differs, tensor by tensor.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &ours).unwrap();
    let (a, b) = (
        GgufModel::open(tmp.path()).unwrap(),
        GgufModel::open(&want_path).unwrap(),
    );
    let mut diffs = Vec::new();
    let ak: Vec<_> = a
        .metadata()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let bk: Vec<_> = b
        .metadata()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if ak != bk {
        diffs.push(format!("metadata differs:\n ours  {ak:?}\n llama {bk:?}"));
    }
    let (at, bt) = (a.files()[0].gguf_tensors(), b.files()[0].gguf_tensors());
    if at.iter().map(|t| &t.name).ne(bt.iter().map(|t| &t.name)) {
        diffs.push("tensor order differs".into());
    }
    let mut same = 0;
    for t in bt {
        let Some(o) = a.tensor(&t.name) else {
            diffs.push(format!("{}: missing", t.name));
            continue;
        };
        let w = b.tensor(&t.name).unwrap();
        if o.dtype != w.dtype {
            diffs.push(format!(
                "{}: ours {} llama.cpp {}",
                t.name, o.dtype, w.dtype
            ));
        } else if o.data != w.data {
            diffs.push(format!("{} ({}): data differs", t.name, o.dtype));
        } else {
            same += 1;
        }
    }
    panic!(
        "{name} {preset}: {same}/{} tensors identical; differences:\n{}",
        bt.len(),
        diffs.join("\n")
    );
}

#[test]
fn q8_0_equals_llama_cpp_byte_for_byte() {
    for name in FIXTURES {
        check(name, Preset::Q8_0);
    }
}

#[test]
fn q4_k_m_equals_llama_cpp_byte_for_byte() {
    for name in FIXTURES {
        check(name, Preset::Q4_K_M);
    }
}

#[test]
fn requantizing_is_refused_with_the_tensor_named() {
    let dir = frugal_testdata::fixtures_dir().join("gguf/qwen2");
    let src = GgufModel::open(dir.join("qwen2-Q8_0.gguf")).unwrap();
    let e = quantize_gguf(&src, Preset::Q4_K_M, Vec::new(), 1, &mut |_, _, _| {}).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tensor 'token_embd.weight' is Q8_0: only F32, F16 and BF16"),
        "{e}"
    );
}

/// FNV-1a 64 of `data` (the checksum `make_quantize_presets.py` records).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every other preset against llama.cpp's files for it (`fixtures/quant/quantize_presets.json`:
/// size, FNV-1a-64 and per-tensor types of what `llama_model_quantize` wrote).
#[test]
fn every_preset_equals_llama_cpp() {
    let path = frugal_testdata::fixtures_dir().join("quant/quantize_presets.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert!(files.len() >= 7 * 16, "{} entries", files.len());
    let mut failures = Vec::new();
    for f in files {
        let (name, preset) = (
            f["fixture"].as_str().unwrap(),
            f["preset"].as_str().unwrap(),
        );
        let p = Preset::from_name(preset).unwrap_or_else(|| panic!("preset {preset}"));
        let src = frugal_testdata::fixtures_dir().join(format!("gguf/{name}/{name}-F32.gguf"));
        let src = GgufModel::open(src).unwrap();
        let mut ours = Vec::new();
        let report = quantize_gguf(&src, p, &mut ours, 2, &mut |_, _, _| {}).unwrap();
        let names = json["tensors"][name].as_array().unwrap();
        let types: Vec<&str> = f["types"].as_str().unwrap().split(' ').collect();
        for (t, (n, want)) in report.tensors.iter().zip(names.iter().zip(&types)) {
            if t.tensor.name != n.as_str().unwrap() || t.to.name() != *want {
                failures.push(format!(
                    "{name} {preset}: {} is {} here, {n} {want} in llama.cpp's",
                    t.tensor.name, t.to
                ));
            }
        }
        let fnv = format!("{:016x}", fnv1a64(&ours));
        if ours.len() as u64 != f["bytes"].as_u64().unwrap()
            || fnv != f["fnv1a64"].as_str().unwrap()
        {
            failures.push(format!(
                "{name} {preset}: {} bytes fnv {fnv}, llama.cpp {} fnv {}",
                ours.len(),
                f["bytes"],
                f["fnv1a64"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `requantize_gguf` (`--allow-requantize`) on llama.cpp's Q8_0 file: every tensor gets the
/// type the Q4_K_M plan gives it, and the requantized rows equal the quantizer applied to
/// gguf-py's dequantization of the Q8_0 rows (`qwen3-moe-Q8_0.dequant.safetensors`, an
/// independent dequantizer), so the dequantize step adds nothing of its own.
#[test]
fn requantizing_dequantizes_like_gguf_py_then_quantizes() {
    use frugal_kernels::quant::quantize::quantize_rows;
    use frugal_kernels::quant::QuantType;
    use frugal_model::quantize_gguf::requantize_gguf;

    let dir = frugal_testdata::fixtures_dir().join("gguf/qwen3-moe");
    let src = GgufModel::open(dir.join("qwen3-moe-Q8_0.gguf")).unwrap();
    let mut ours = Vec::new();
    let report = requantize_gguf(&src, Preset::Q4_K_M, &mut ours, 2, &mut |_, _, _| {}).unwrap();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &ours).unwrap();
    let out = GgufModel::open(tmp.path()).unwrap();
    let mut requantized = 0;
    for p in &report.tensors {
        let t = out
            .tensor(&p.tensor.name)
            .expect("every planned tensor is written");
        assert_eq!(t.dtype, p.to, "{}", p.tensor.name);
        requantized += usize::from(p.to != p.tensor.dtype && p.tensor.dtype.is_quantized());
    }
    assert!(requantized > 0, "some Q8_0 tensors were requantized");

    let samples = std::fs::read(dir.join("qwen3-moe-Q8_0.dequant.safetensors")).unwrap();
    let samples = safetensors::SafeTensors::deserialize(&samples).unwrap();
    let mut checked = 0;
    for (name, view) in samples.tensors() {
        let rows: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n_per_row = view.shape()[1];
        let to = out.tensor(&name).unwrap().dtype;
        let qt = QuantType::from_ggml_id(to.ggml_id().unwrap()).unwrap();
        let row = qt.row_bytes(n_per_row).unwrap();
        let mut want = vec![0u8; row * view.shape()[0]];
        quantize_rows(qt, &rows, n_per_row, &mut want, 1).unwrap();
        let got = &out.tensor(&name).unwrap().data[..want.len()];
        assert!(got == want, "{name}: requantized rows differ");
        checked += 1;
    }
    assert!(checked > 0);
}
