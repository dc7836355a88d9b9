//! Round-to-nearest: min-max scales, every weight rounded on its own. The floor.

use candle_core::{Result, Tensor};

use super::{observe, quantize, to_f32_matrix, QLinear, WeightScheme};

pub fn rtn(w: &Tensor, s: &WeightScheme) -> Result<QLinear> {
    let (w, out, inp) = to_f32_matrix(w)?;
    Ok(rtn_values(&w, out, inp, s))
}

pub fn rtn_values(w: &[f32], out: usize, inp: usize, s: &WeightScheme) -> QLinear {
    let (scale, zp) = observe(w, out, inp, s, None);
    let mut ql = QLinear::new(*s, out, inp, scale, zp, None);
    let ng = ql.n_groups();
    for r in 0..out {
        for c in 0..inp {
            let g = r * ng + ql.group_of(c);
            ql.q[r * inp + c] = quantize(w[r * inp + c], ql.scale[g], ql.zp[g], s);
        }
    }
    ql
}
