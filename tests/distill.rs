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
