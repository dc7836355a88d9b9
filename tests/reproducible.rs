//! Every figure is bit-reproducible on one machine: the calibrated quantizers give the same
//! quantized values whatever the number of threads (no reduction whose order depends on how
//! work is split or stolen), and KL to the base is the same figure run after run.

mod common;

use candle_core::{DType, Device, Tensor};
use exaone_compress::compress::quant::apply::{quantize_awq, quantize_gptq, QuantizedModel};
use exaone_compress::compress::quant::{awq::AwqConfig, gptq::GptqConfig, Scheme};
use exaone_compress::eval::divergence_per_token;

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn values(q: &QuantizedModel) -> Vec<(String, Vec<u32>)> {
    q.linears
        .iter()
        .map(|(n, l)| {
            let bits = l.q.iter().chain(&l.scale).chain(&l.zp).map(|v| v.to_bits());
            (n.clone(), bits.collect())
        })
        .collect()
}

#[test]
fn awq_and_gptq_are_the_same_on_one_two_and_three_threads() {
    let base = exaone_compress::checkpoint::load_model(
        &common::fixture("full_tied"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let calib: Vec<Vec<u32>> = (0..4u32)
        .map(|s| (0..48u32).map(|i| (i * 7919 + s * 31) % 500 + 4).collect())
        .collect();
    let w4 = Scheme::w4a16(128, true);
    let run = |threads: usize| {
        in_pool(threads, || {
            let mut log = vec![];
            let a = quantize_awq(
                &base,
                &w4,
                &calib,
                &AwqConfig::default(),
                &|_| false,
                &mut log,
            )
            .unwrap();
            let g = quantize_gptq(
                &base,
                &w4,
                &calib,
                &GptqConfig::default(),
                &|_| false,
                &mut log,
            )
            .unwrap();
            let kl = divergence_per_token(&base, &g.model, &calib, 2, None)
                .unwrap()
                .1;
            (values(&a), values(&g), kl)
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        let other = run(threads);
        assert!(one.0 == other.0, "AWQ differs on {threads} threads");
        assert!(one.1 == other.1, "GPTQ differs on {threads} threads");
        assert!(one.2 == other.2, "KL differs on {threads} threads");
    }
}

/// The evaluation's CPU activation quantization is the model's own, bit for bit: on ties,
/// values at every scale, zeros and the extremes of each row, for int8 and fp8.
#[test]
fn cpu_activation_quantization_is_the_models_bit_for_bit() {
    use exaone_compress::eval::act_quant::fake_quant_rows;
    use exaone_compress::model::ActQuant;
    let mut v: Vec<f32> = vec![];
    for r in 0..64u32 {
        let mag = 10f32.powi(r as i32 % 12 - 6);
        for i in 0..128u32 {
            let x = ((i * 2654435761u32.wrapping_add(r * 97)) % 20001) as f32 / 10000.0 - 1.0;
            v.push(match i % 17 {
                0 => 0.0,
                1 => -0.0,
                // exact ties after scaling by the row's absmax
                2 => mag * 0.5,
                3 => -mag * 2.5 / 127.0,
                _ => x * mag,
            });
        }
        v[r as usize * 128 + 5] = mag; // the row's absmax
    }
    let x = Tensor::from_vec(v, (64, 128), &Device::Cpu).unwrap();
    for q in [ActQuant::Int8PerToken, ActQuant::Fp8PerToken] {
        let want = bits(&q.fake_quant(&x).unwrap());
        let got = bits(&fake_quant_rows(q, &x).unwrap());
        let differ = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{q:?}: {differ} of {} values differ", want.len());
    }
}

/// A tensor's values as their f32 bit patterns (for bit-for-bit comparisons).
fn bits(t: &Tensor) -> Vec<u32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

/// What distillation differentiates through on the CPU (the fused KD loss, softmax and RMSNorm
/// with their backward) gives the same bits on one, two and three threads: no reduction's order
/// depends on how rows are split.
#[test]
fn training_ops_are_the_same_on_one_two_and_three_threads() {
    use candle_core::Var;
    use exaone_compress::compress::distill::kd_loss;
    use exaone_compress::model::grad_ops::{rms_norm, softmax_last_dim};
    let dev = Device::Cpu;
    let (rows, n) = (300, 96);
    let wave = |k: usize| -> Vec<f32> {
        (0..rows * n)
            .map(|i| ((i * k % 1009) as f32 / 100.9 - 5.0) * 1.1)
            .collect()
    };
    let run = || {
        let x = Var::from_tensor(&Tensor::from_vec(wave(7919), (rows, n), &dev).unwrap()).unwrap();
        let w =
            Var::from_tensor(&Tensor::from_vec(wave(31)[..n].to_vec(), n, &dev).unwrap()).unwrap();
        let t = Tensor::from_vec(wave(104_729), (rows, n), &dev).unwrap();
        let h = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let p = softmax_last_dim(&h).unwrap();
        let loss = (kd_loss(&t, &h, 1.0).unwrap() + p.sqr().unwrap().sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        (
            bits(&loss),
            bits(g.get(x.as_tensor()).unwrap()),
            bits(g.get(w.as_tensor()).unwrap()),
        )
    };
    let one = in_pool(1, run);
    assert_eq!(one, in_pool(2, run));
    assert_eq!(one, in_pool(3, run));
}
