//! `prune` of a quantized checkpoint: the stored format kept, checked against the quantized
//! model without the layer and rebuilt by `apply`.

use std::path::Path;

use exaone_compress::Checkpoint;

use super::{fails, s, same_checkpoint, succeeds};

/// `prune` of a quantized checkpoint keeps it as stored: the kept layers' tensors byte for
/// byte under their new numbers, the quantization ignore list renumbered, a checkpoint that
/// `package --check` accepts and whose forward is the quantized model's without the layer;
/// `apply` rebuilds it bit for bit.
#[test]
fn pruning_a_quantized_checkpoint_keeps_its_format() {
    use candle_core::{DType, Device, Tensor};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let q = t.join("q");
    succeeds(&[
        "quantize",
        "--scheme",
        "w8a8",
        "--method",
        "rtn",
        "--ignore",
        "model.layers.3.mlp.down_proj",
        "--out",
        s(&q),
    ]);
    let pq = t.join("pq");
    succeeds(&["prune", "--drop", "2", "--model", s(&q), "--out", s(&pq)]);
    let problems = exaone_compress::checkpoint::package::validate(&pq);
    assert!(problems.is_empty(), "{problems:?}");
    let (cq, cp) = (
        Checkpoint::open(&q).unwrap(),
        Checkpoint::open(&pq).unwrap(),
    );
    let n = cq.config.num_hidden_layers;
    assert_eq!(cp.config.num_hidden_layers, n - 1);
    // layer 3 is layer 2 now, its bytes unchanged; layer 2's are gone
    for name in cq.names().filter(|m| m.starts_with("model.layers.3.")) {
        let new = name.replace("model.layers.3.", "model.layers.2.");
        assert!(cq.bytes(name).unwrap() == cp.bytes(&new).unwrap(), "{name}");
    }
    let last = format!("model.layers.{}.", n - 1);
    assert!(!cp.names().any(|m| m.starts_with(&last)));
    let ignore = cp.quant_info().unwrap().unwrap().ignore;
    assert!(
        ignore.iter().any(|e| e == "model.layers.2.mlp.down_proj")
            && !ignore.iter().any(|e| e == "model.layers.3.mlp.down_proj"),
        "{ignore:?}"
    );
    // the same logits as the quantized model with layer 2 left out
    let dev = Device::Cpu;
    let load = |d: &Path| exaone_compress::checkpoint::load_model(d, DType::F32, &dev).unwrap();
    let kept: Vec<usize> = (0..n).filter(|&i| i != 2).collect();
    let reference = load(&q).with_layers(&kept).unwrap();
    let ids = Tensor::new(&[[5u32, 17, 300, 42, 9, 1000]], &dev).unwrap();
    let a = reference.forward(&ids, None).unwrap();
    let b = load(&pq).forward(&ids, None).unwrap();
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // its Linears cannot be trained as stored: refused before any step
    let d = t.join("d");
    fails(
        &[
            "distill",
            "--student",
            s(&pq),
            "--train",
            "all-layers",
            "--steps",
            "1",
            "--out",
            s(&d),
        ],
        &["is not stored as a dense tensor"],
    );
    assert!(!d.exists());
    // and the recipe rebuilds it
    let again = t.join("again");
    succeeds(&[
        "apply",
        "--recipe",
        s(&pq.join("recipe.json")),
        "--out",
        s(&again),
    ]);
    same_checkpoint(&pq, &again);
}
