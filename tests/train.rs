//! The training loop: it learns, it clips, it checkpoints, it stops on time, and the schedule
//! is the one documented.

use candle_core::{DType, Device, Tensor};
use exaone_compress::model::init::random_model;
use exaone_compress::train::{lm_loss, make_trainable, train_with_checkpoints, TrainConfig};
use exaone_compress::Exaone4;

fn tiny() -> Exaone4 {
    let cfg = exaone_compress::Exaone4Config::from_file(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/full_tied"),
    )
    .unwrap();
    random_model(cfg, 0.02, 0, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn schedule_warms_up_then_decays_to_the_floor() {
    let c = TrainConfig {
        steps: 100,
        lr: 1e-3,
        warmup_steps: 10,
        min_lr_ratio: 0.1,
        ..Default::default()
    };
    assert!((c.lr_at(0) - 1e-4).abs() < 1e-12);
    assert!((c.lr_at(9) - 1e-3).abs() < 1e-12);
    assert!(c.lr_at(50) < 1e-3 && c.lr_at(50) > 1e-4);
    assert!((c.lr_at(99) - 1e-4).abs() < 2e-6);
}

#[test]
fn a_tiny_model_memorises_a_sequence_and_checkpoints() {
    let mut m = tiny();
    let vars = make_trainable(&mut m, &|_| true).unwrap();
    let seq: Vec<u32> = (0..33).map(|i| (i * 37 % 500 + 4) as u32).collect();
    let x = Tensor::from_vec(seq, (1, 33), &Device::Cpu).unwrap();
    let cfg = TrainConfig {
        steps: 60,
        lr: 3e-3,
        warmup_steps: 5,
        checkpoint_every: 20,
        ..Default::default()
    };
    let mut saved = vec![];
    let log = train_with_checkpoints(
        &mut m,
        &vars,
        &cfg,
        &mut |m, _| Ok((lm_loss(m, &x)?, 32)),
        &mut |m| Ok(lm_loss(m, &x)?.to_scalar::<f32>()? as f64),
        &mut |_, step| {
            saved.push(step);
            Ok(())
        },
        "test",
    )
    .unwrap();
    assert_eq!(saved, vec![20, 40, 60]);
    let (first, last) = (log[0].loss, log.last().unwrap().eval_loss.unwrap());
    assert!(
        last < first * 0.5,
        "loss {first} → {last}: the loop does not learn"
    );
    assert!(log.iter().all(|p| p.grad_norm.is_finite()));
}

#[test]
fn the_time_limit_stops_training_early() {
    let mut m = tiny();
    let vars = make_trainable(&mut m, &|n| n.ends_with("norm.weight")).unwrap();
    let x = Tensor::from_vec((4..37).collect::<Vec<u32>>(), (1, 33), &Device::Cpu).unwrap();
    let cfg = TrainConfig {
        steps: 1_000_000,
        max_secs: Some(0.0),
        ..Default::default()
    };
    let log = train_with_checkpoints(
        &mut m,
        &vars,
        &cfg,
        &mut |m, _| Ok((lm_loss(m, &x)?, 32)),
        &mut |_| Ok(0.0),
        &mut |_, _| Ok(()),
        "t",
    )
    .unwrap();
    assert_eq!(log.len(), 1);
}
