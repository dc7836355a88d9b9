//! Non-finite values in a model's weights. A NaN in one embedding row reaches only the tokens
//! that read that row, so `package`'s short test prompt misses it; vLLM would then compute NaN
//! for every sequence holding that token. Every dense weight is scanned instead.

use crate::model::Exaone4;

/// One problem per weight of `model` (f32) that holds NaN or ±inf, naming the first such
/// value's position and how many there are; weights `skip` names are left out (quantized ones,
/// whose scales and packing `package` checks on their own).
pub(super) fn nonfinite_weights(model: &Exaone4, skip: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut p = vec![];
    for (name, t) in model.named_tensors() {
        if skip(&name) {
            continue;
        }
        let Ok(v) = t.flatten_all().and_then(|f| f.to_vec1::<f32>()) else {
            continue;
        };
        let Some(first) = v.iter().position(|x| !x.is_finite()) else {
            continue;
        };
        let count = v.iter().filter(|x| !x.is_finite()).count();
        let mut at = vec![];
        let mut rest = first;
        for &d in t.dims().iter().rev() {
            at.push(rest % d.max(1));
            rest /= d.max(1);
        }
        at.reverse();
        p.push(format!(
            "tensor `{name}` holds {} at {at:?} ({count} non-finite value{} in all): whatever reads it computes NaN (a token whose embedding row it is, every product through it)",
            v[first],
            if count == 1 { "" } else { "s" }
        ));
    }
    p
}
