//! Fresh weights for a config (seeded), as transformers initialises EXAONE 4: normal(0, σ)
//! matrices and embedding, norm weights 1.

use candle_core::{DType, Device, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{Exaone4, Exaone4Config};

/// A reproducible random model: matrices ~ N(0, std²), norms = 1.
pub fn random_model(
    cfg: Exaone4Config,
    std: f64,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Exaone4> {
    // each tensor gets its own stream, derived from the seed and its name, so adding a tensor
    // does not change the others
    Exaone4::build(
        cfg,
        |name, shape| {
            let h = name.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |a, b| {
                (a.rotate_left(5) ^ b as u64).wrapping_mul(0x100_0000_01B3)
            });
            random_tensor(shape, std, &mut StdRng::seed_from_u64(h), dtype, device)
        },
        dtype,
        device,
    )
}

fn random_tensor(
    shape: &[usize],
    std: f64,
    rng: &mut StdRng,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let t = if shape.len() == 1 {
        Tensor::ones(n, DType::F32, &Device::Cpu)?
    } else {
        let mut v = Vec::with_capacity(n + 1);
        // Box–Muller: rand 0.9's core has no normal distribution
        while v.len() < n {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            let m = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            v.push((m * a.cos() * std) as f32);
            v.push((m * a.sin() * std) as f32);
        }
        v.truncate(n);
        Tensor::from_vec(v, shape, &Device::Cpu)?
    };
    t.to_dtype(dtype)?.to_device(device)
}
