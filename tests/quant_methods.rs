//! On the default model, calibrated methods must beat round-to-nearest: GPTQ and AWQ (W4A16
//! g128) end closer to the base model (KL on held-out text) than RTN. Also: a failed Cholesky is
//! retried with more damping, and NaN calibration data is refused.

use candle_core::{DType, Device, Tensor};
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::quant::apply::{quantize_awq, quantize_gptq, quantize_rtn};
use exaone_compress::compress::quant::gptq::{gptq, GptqConfig, Hessian};
use exaone_compress::compress::quant::{awq::AwqConfig, Scheme};
use exaone_compress::data::default_splits;
use exaone_compress::eval::divergence;
use exaone_compress::model::Tokenizer;
use exaone_compress::{default_model_dir, Exaone4};

#[test]
fn gptq_and_awq_beat_rtn_on_the_default_model() {
    let dir = default_model_dir();
    let base = exaone_compress::checkpoint::load_model(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let (train, val, _) = default_splits(&tok, tok.token_id("[|endofturn|]")).unwrap();
    let calib = samples(&train, 16, 256, 0).unwrap();
    let held_out = samples(&val, 8, 256, 1).unwrap();
    let w4 = Scheme::w4a16(128, true);
    let kl = |m: &Exaone4| divergence(&base, m, &held_out, 4, None).unwrap();
    let rtn = kl(&quantize_rtn(&base, &w4, &|_| false).unwrap().model);
    let mut log = vec![];
    let g = kl(&quantize_gptq(
        &base,
        &w4,
        &calib,
        &GptqConfig::default(),
        &|_| false,
        &mut log,
    )
    .unwrap()
    .model);
    let a = kl(&quantize_awq(
        &base,
        &w4,
        &calib,
        &AwqConfig::default(),
        &|_| false,
        &mut log,
    )
    .unwrap()
    .model);
    // by more than two standard errors
    assert!(
        g.kl_mean + 2.0 * (g.kl_stderr + rtn.kl_stderr) < rtn.kl_mean,
        "GPTQ {g:?} vs RTN {rtn:?}"
    );
    assert!(
        a.kl_mean + 2.0 * (a.kl_stderr + rtn.kl_stderr) < rtn.kl_mean,
        "AWQ {a:?} vs RTN {rtn:?}"
    );
}

#[test]
fn a_singular_hessian_gets_more_damping_and_nan_data_is_refused() {
    // rank-1 inputs: H = 2·xxᵀ is singular; 1% damping of a tiny mean diagonal may still fail
    // numerically, and whatever happens the result must be finite and say what damping it used
    let x = Tensor::from_vec(vec![1f32; 128], (1, 128), &Device::Cpu).unwrap();
    let mut h = Hessian::new();
    h.add(&x).unwrap();
    let w = Tensor::randn(0f32, 0.1, (16, 128), &Device::Cpu).unwrap();
    let cfg = GptqConfig {
        damp: 0.0,
        ..Default::default()
    };
    let (ql, rep) = gptq(&w, h.h.as_ref().unwrap(), &Scheme::w4a16(128, true), &cfg).unwrap();
    assert!(
        rep.retries >= 1,
        "zero damping on a singular H must be retried: {rep:?}"
    );
    assert!(ql.dequantized().iter().all(|v| v.is_finite()));
    let bad = Tensor::from_vec(vec![f32::NAN; 128], (1, 128), &Device::Cpu).unwrap();
    let e = Hessian::new().add(&bad).unwrap_err().to_string();
    assert!(e.contains("NaN"), "{e}");
}
