//! Distillation heals a pruned student (KL to the teacher falls), and the reference pipeline's
//! lm_head step unties the head and costs vocab × hidden parameters.

mod common;

use candle_core::{DType, Device, Tensor};
use exaone_compress::compress::distill::{
    distill, reference_lm_head_step, DistillConfig, ParamGroup,
};
use exaone_compress::data::TokenStream;
use exaone_compress::eval::divergence;
use exaone_compress::train::TrainConfig;

#[test]
fn kd_on_the_norms_heals_a_pruned_student() {
    let teacher = exaone_compress::checkpoint::load_model(
        &common::fixture("full_tied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut student = teacher.with_layers(&[0, 2]).unwrap();
    let ids: Vec<u32> = (0..4000u32).map(|i| (i * 7919 + i / 3) % 500 + 4).collect();
    let stream = TokenStream {
        ids: ids.clone(),
        bytes: 4000,
    };
    let seqs: Vec<Vec<u32>> = ids.chunks(32).take(8).map(|c| c.to_vec()).collect();
    let before = divergence(&teacher, &student, &seqs, 4, None)
        .unwrap()
        .kl_mean;
    let val = vec![Tensor::from_vec(seqs[0].clone(), (1, 32), &Device::Cpu).unwrap()];
    let cfg = DistillConfig {
        train: TrainConfig {
            steps: 40,
            lr: 1e-2,
            warmup_steps: 4,
            weight_decay: 0.0,
            ..Default::default()
        },
        temperature: 1.0,
        groups: vec![ParamGroup::Norms],
        batch: 4,
        seq_len: 32,
        seed: 0,
    };
    distill(&teacher, &mut student, &stream, &val, &cfg).unwrap();
    let after = divergence(&teacher, &student, &seqs, 4, None)
        .unwrap()
        .kl_mean;
    assert!(after < before * 0.9, "KL {before} → {after}");
    assert!(student.lm_head.is_none(), "norms only: the head stays tied");
}

#[test]
fn the_reference_lm_head_step_unties_the_head() {
    let teacher = exaone_compress::checkpoint::load_model(
        &common::fixture("full_tied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut student = teacher.share();
    let before = student.config.num_parameters();
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|k| (0..6).map(|i| (k * 50 + i * 13 + 4) as u32).collect())
        .collect();
    reference_lm_head_step(&teacher, &mut student, &prompts, 361, 5e-6, 8).unwrap();
    assert!(!student.config.tie_word_embeddings && student.lm_head.is_some());
    assert_eq!(
        student.config.num_parameters() - before,
        512 * 128,
        "untying costs vocab × hidden"
    );
}

/// The kernel distillation puts on frozen Linears and the untrained lm_head (no weight
/// gradients) changes nothing: the loss and the trained norms' gradients are the same bit for
/// bit as candle's own matmul gives, and the weight is no longer given a gradient.
#[test]
fn frozen_linears_train_bit_for_bit_alike() {
    use exaone_compress::compress::distill::{
        install_frozen_kernels, kd_loss, remove_frozen_kernels,
    };
    use exaone_compress::train::make_trainable;
    let teacher = exaone_compress::checkpoint::load_model(
        &common::fixture("full_tied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<u32> = (0..96u32).map(|i| (i * 7919 + i / 3) % 500 + 4).collect();
    let x = Tensor::from_vec(ids, (3, 32), &Device::Cpu).unwrap();
    let t = teacher.forward(&x, None).unwrap();
    let run = |frozen: bool| {
        let mut s = teacher.with_layers(&[0, 2]).unwrap();
        let norms = |n: &str| n.ends_with("norm.weight");
        let vars = make_trainable(&mut s, &norms).unwrap();
        s.mode = exaone_compress::model::layers::Mode::Differentiable;
        let n = if frozen {
            install_frozen_kernels(&mut s, &norms).unwrap()
        } else {
            0
        };
        let loss = kd_loss(&t, &s.forward(&x, None).unwrap(), 1.0).unwrap();
        let grads = loss.backward().unwrap();
        let q = s.layers[0].self_attn.q_proj.weight.clone();
        let g: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, v)| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let weight_grad = grads.get(&q).is_some();
        remove_frozen_kernels(&mut s);
        assert!(s.layers[0].self_attn.q_proj.kernel.is_none() && s.head_kernel.is_none());
        (loss.to_scalar::<f32>().unwrap(), g, n, weight_grad)
    };
    let (plain, frozen) = (run(false), run(true));
    assert_eq!(
        frozen.2, 15,
        "every Linear of the 2 layers and the tied lm_head"
    );
    assert_eq!(plain.0.to_bits(), frozen.0.to_bits());
    assert_eq!(plain.1, frozen.1);
    assert!(!frozen.3, "no gradient for a frozen weight");
}

/// The fused CPU distillation loss is the candle expression's loss and gradient (to f32
/// rounding), at T = 1 and T = 2, on logits that include a dominant word and a flat row.
#[test]
fn fused_kd_loss_matches_the_tensor_expression() {
    use candle_core::Var;
    use exaone_compress::compress::distill::{kd_loss, kd_loss_unfused};
    let dev = Device::Cpu;
    let (rows, v) = (6, 301);
    let mut t: Vec<f32> = (0..rows * v)
        .map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * 1.7)
        .collect();
    let mut s: Vec<f32> = (0..rows * v)
        .map(|i| ((i * 104_729 % 977) as f32 / 97.7 - 5.0) * 2.3)
        .collect();
    t[5] = 60.0; // a near one-hot teacher row
    s[2 * v..3 * v].iter_mut().for_each(|x| *x = 0.25); // a flat student row
    let t = Tensor::from_vec(t, (2, rows / 2, v), &dev).unwrap();
    for temp in [1.0, 2.0] {
        let run = |fused: bool| {
            let sv =
                Var::from_tensor(&Tensor::from_vec(s.clone(), (2, rows / 2, v), &dev).unwrap())
                    .unwrap();
            let f = if fused { kd_loss } else { kd_loss_unfused };
            let loss = f(&t, sv.as_tensor(), temp).unwrap();
            let g = loss.backward().unwrap();
            let g: Vec<f32> = g
                .get(sv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (loss.to_scalar::<f32>().unwrap(), g)
        };
        let ((lf, gf), (lu, gu)) = (run(true), run(false));
        assert!(lu > 0.1, "a loss worth comparing: {lu}");
        assert!((lf - lu).abs() <= 2e-5 * lu, "T={temp}: fused {lf} vs {lu}");
        let scale = gu.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = gf
            .iter()
            .zip(&gu)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            scale > 0.0 && worst <= 1e-5 * scale,
            "T={temp}: gradient off by {worst} of {scale}"
        );
    }
}
