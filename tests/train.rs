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

/// The fused CPU softmax and RMSNorm that training differentiates through give the values and
/// the gradients (input and weight) of candle's expressions, to f32 rounding.
#[test]
fn fused_softmax_and_rms_norm_match_their_expressions() {
    use candle_core::{Var, D};
    use exaone_compress::model::grad_ops;
    let dev = Device::Cpu;
    let (rows, n) = (7, 130);
    let x: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 7919 % 1009) as f32 / 100.9 - 5.0) * 1.3)
        .collect();
    let g: Vec<f32> = (0..rows * n)
        .map(|i| ((i * 104_729 % 997) as f32 / 99.7 - 5.0) * 0.7)
        .collect();
    let w: Vec<f32> = (0..n).map(|j| 0.5 + (j % 13) as f32 / 10.0).collect();
    let g = Tensor::from_vec(g, (rows, n), &dev).unwrap();
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            scale > 0.0 && worst <= 2e-5 * scale,
            "{what}: off by {worst} of {scale}"
        );
    };
    // softmax: value and input gradient of Σ g ⊙ softmax(x)
    let run = |fused: bool| {
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (rows, n), &dev).unwrap()).unwrap();
        let y = if fused {
            grad_ops::softmax_last_dim(xv.as_tensor()).unwrap()
        } else {
            candle_nn::ops::softmax(xv.as_tensor(), D::Minus1).unwrap()
        };
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        (y, grads.get(xv.as_tensor()).unwrap().clone())
    };
    let ((yf, dxf), (yu, dxu)) = (run(true), run(false));
    close(&yf, &yu, "softmax");
    close(&dxf, &dxu, "softmax dx");
    // RMSNorm: value and the gradients of input and weight
    let run = |fused: bool| {
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (rows, n), &dev).unwrap()).unwrap();
        let wv = Var::from_tensor(&Tensor::from_vec(w.clone(), n, &dev).unwrap()).unwrap();
        let y = if fused {
            grad_ops::rms_norm(xv.as_tensor(), wv.as_tensor(), 1e-5).unwrap()
        } else {
            candle_nn::ops::rms_norm_slow(xv.as_tensor(), wv.as_tensor(), 1e-5).unwrap()
        };
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(xv.as_tensor()).unwrap().clone();
        let dw = grads.get(wv.as_tensor()).unwrap().clone();
        (y, dx, dw)
    };
    let ((yf, dxf, dwf), (yu, dxu, dwu)) = (run(true), run(false));
    close(&yf, &yu, "rms_norm");
    close(&dxf, &dxu, "rms_norm dx");
    close(&dwf, &dwu, "rms_norm dw");
}
