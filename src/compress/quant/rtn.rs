//! Round-to-nearest: min-max scales, every weight rounded on its own. The floor.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::{check_finite, observe, quantize, to_f32_matrix, QLinear, WeightScheme};

/// RTN of a weight [out, in]. Refuses a scheme that cannot be computed (e.g. group size 0) and
/// NaN or infinite weights (they would become 0 or give infinite scales), as GPTQ and AWQ do.
pub fn rtn(w: &Tensor, s: &WeightScheme) -> Result<QLinear> {
    if let Err(e) = s.check() {
        candle_core::bail!("RTN: {e}");
    }
    let (w, out, inp) = to_f32_matrix(w)?;
    check_finite(&w, inp, "RTN")?;
    Ok(rtn_values(&w, out, inp, s))
}

pub fn rtn_values(w: &[f32], out: usize, inp: usize, s: &WeightScheme) -> QLinear {
    let (scale, zp) = observe(w, out, inp, s, None);
    let mut ql = QLinear::new(*s, out, inp, scale, zp, None);
    let ng = ql.n_groups();
    let (scale, zp) = (&ql.scale, &ql.zp);
    let gs = s.group_size(inp);
    ql.q.par_chunks_mut(inp).enumerate().for_each(|(r, row)| {
        for (c, q) in row.iter_mut().enumerate() {
            let g = r * ng + c / gs;
            *q = quantize(w[r * inp + c], scale[g], zp[g], s);
        }
    });
    ql
}
