//! Seeded damage of safetensors headers and compressed-tensors parameters: never a panic.

use super::*;

/// Loads `dir` through the library the way every command does; must return, never panic.
fn load_never_panics(dir: &Path, what: &str) {
    let r = std::panic::catch_unwind(|| {
        let Ok(ck) = Checkpoint::open(dir) else {
            return;
        };
        let _ = ck.load_model(DType::F32, &Device::Cpu);
        let names: Vec<String> = ck.names().cloned().collect();
        for n in &names {
            let _ = ck.raw(n, &Device::Cpu);
            if let Some(p) = n.strip_suffix(".weight_scale") {
                let _ = ck.dequantized(p);
            }
        }
    });
    assert!(r.is_ok(), "panicked on {what}");
}

#[test]
fn randomized_damage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let tmp = tempfile::tempdir().unwrap();
    // 1. safetensors headers: truncation, bit flips, shape / offset / dtype edits
    let dense = copy_fixture("full_tied");
    let orig = std::fs::read(dense.path().join("model.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(orig[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&orig[8..8 + hlen]).unwrap();
    let tensor_names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let values = [
        0u64,
        1,
        2,
        7,
        127,
        128,
        1 << 31,
        1 << 40,
        u64::MAX / 2,
        u64::MAX,
    ];
    for it in 0..150 {
        let bytes = match rng.random_range(0..4) {
            0 => orig[..rng.random_range(0..orig.len())].to_vec(),
            1 => {
                let mut b = orig.clone();
                for _ in 0..rng.random_range(1..4) {
                    b[rng.random_range(0..8 + hlen)] ^= 1 << rng.random_range(0..8);
                }
                b
            }
            _ => {
                let mut h = header.clone();
                let t = &mut h[tensor_names[rng.random_range(0..tensor_names.len())].as_str()];
                let v = json!(values[rng.random_range(0..values.len())]);
                match rng.random_range(0..4) {
                    0 => t["shape"][0] = v,
                    1 => t["data_offsets"][rng.random_range(0..2)] = v,
                    2 => {
                        t["dtype"] = json!(
                            ["I8", "U8", "F64", "BOOL", "I64", "F8_E5M2"][rng.random_range(0..6)]
                        )
                    }
                    _ => t["shape"] = json!([]),
                }
                let text = h.to_string();
                let mut b = (text.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(text.as_bytes());
                b.extend_from_slice(&orig[8 + hlen..]);
                b
            }
        };
        let d = copy_dir(dense.path(), &tmp.path().join("dense"));
        std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
        load_never_panics(&d, &format!("header damage {it}"));
    }
    // 2. compressed-tensors parameters: values, shapes and dtypes of the auxiliary tensors
    let dirs = [
        quantized(tmp.path(), "qs", Scheme::w4a16(32, true)),
        quantized(tmp.path(), "qa", Scheme::w4a16(32, false)),
        quantized(tmp.path(), "q8", Scheme::w8a8_int8()),
    ];
    let srcs: Vec<_> = dirs.iter().map(|d| read_tensors(d)).collect();
    use safetensors::Dtype as D;
    let dtypes = [D::I32, D::I64, D::BF16, D::F32, D::U8, D::I8];
    let suffixes = [
        "weight_scale",
        "weight_packed",
        "weight_shape",
        "weight_zero_point",
        "weight_g_idx",
        "weight",
    ];
    for it in 0..150 {
        let k = rng.random_range(0..3);
        let mut ts = srcs[k].clone();
        let lin = ["self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"][rng.random_range(0..3)];
        let pre = format!("model.layers.{}.{lin}", rng.random_range(0..3));
        let suffix = suffixes[rng.random_range(0..suffixes.len())];
        let name = format!("{pre}.{suffix}");
        let mut t = ts.get(&name).cloned().unwrap_or(RawTensor {
            dtype: D::I32,
            shape: vec![128],
            data: vec![0; 512],
        });
        let bytes_of = |t: &RawTensor| t.shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        match rng.random_range(0..5) {
            0 => {
                ts.remove(&name);
            }
            1 => {
                rng.fill(&mut t.data[..]); // random values, same shape
                ts.insert(name, t);
            }
            2 => {
                // a new small shape, random contents
                t.shape = (0..rng.random_range(0..3))
                    .map(|_| rng.random_range(0..300))
                    .collect();
                t.data = vec![0; bytes_of(&t)];
                rng.fill(&mut t.data[..]);
                ts.insert(name, t);
            }
            3 => {
                t.dtype = dtypes[rng.random_range(0..dtypes.len())]; // another dtype, resized
                let n = bytes_of(&t);
                t.data.resize(n, 0x7f);
                ts.insert(name, t);
            }
            _ => {
                // one extreme value (a shape entry, a group index, a scale)
                let v =
                    [i64::MIN, -1, 0, 1, 4, 127, 128, 1 << 33, i64::MAX][rng.random_range(0..9)];
                let w = t.dtype.bitsize() / 8;
                if t.data.len() >= w && w > 0 {
                    let at = rng.random_range(0..t.data.len() / w) * w;
                    t.data[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
                ts.insert(name, t);
            }
        }
        let d = copy_dir(&dirs[k], &tmp.path().join("ct"));
        write_tensors(&d, &ts);
        load_never_panics(
            &d,
            &format!("compressed-tensors damage {it} ({pre}.{suffix})"),
        );
        if it % 30 == 0 {
            // the CLI on the same damage: status 0 or 1, never 101
            let o = run(&format!(
                "generate --model {} --ids 1,2 --max-new-tokens 1",
                s(&d)
            ));
            assert!(
                o.code == 0 || o.code == 1,
                "status {}: {}",
                o.code,
                o.stderr
            );
        }
    }
}
