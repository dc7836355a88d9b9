//! Multiple-choice accuracy by the log-likelihood of each option (lm-evaluation-harness style):
//! `acc` picks the option with the highest summed log-probability, `acc_norm` the highest per
//! byte of option text. [`multiple_choice_per_item`] also says which items each rule got right,
//! for paired comparisons (`eval::paired`).

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::model::{Exaone4, Tokenizer};

#[derive(Clone, Debug)]
pub struct McItem {
    pub task: String,
    pub prompt: String,
    pub choices: Vec<String>,
    pub label: usize,
}

fn bad(path: &Path, msg: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {msg}", path.display()),
    )
}

/// BIG-bench style JSONL: `{task, input, choices, label}` a line.
pub fn load_bigbench(path: &Path) -> std::io::Result<Vec<McItem>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))?;
            let choices: Vec<String> = v["choices"]
                .as_array()
                .ok_or_else(|| bad(path, format!("line {}: no choices", i + 1)))?
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            let label = v["label"]
                .as_u64()
                .ok_or_else(|| bad(path, format!("line {}: no label", i + 1)))?
                as usize;
            if label >= choices.len() {
                return Err(bad(
                    path,
                    format!("line {}: label {label} out of range", i + 1),
                ));
            }
            Ok(McItem {
                task: v["task"].as_str().unwrap_or("bigbench").to_string(),
                prompt: v["input"].as_str().unwrap_or("").to_string(),
                choices,
                label,
            })
        })
        .collect()
}

/// KMMLU style JSON array: `{question, answer (1-4), A, B, C, D}`, prompted as in KMMLU's
/// direct evaluation (question, lettered options, "정답:") with the letters as choices.
pub fn load_kmmlu(path: &Path, task: &str) -> std::io::Result<Vec<McItem>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .map_err(|e| bad(path, e.to_string()))?;
    let arr = v
        .as_array()
        .ok_or_else(|| bad(path, "expected a JSON array".into()))?;
    arr.iter()
        .enumerate()
        .map(|(i, q)| {
            let ans = q["answer"]
                .as_u64()
                .ok_or_else(|| bad(path, format!("item {i}: no answer")))?
                as usize;
            if !(1..=4).contains(&ans) {
                return Err(bad(path, format!("item {i}: answer {ans} not in 1..=4")));
            }
            let opt = |k: &str| q[k].as_str().unwrap_or("").to_string();
            let prompt = format!(
                "{}\nA. {}\nB. {}\nC. {}\nD. {}\n정답:",
                q["question"].as_str().unwrap_or(""),
                opt("A"),
                opt("B"),
                opt("C"),
                opt("D")
            );
            Ok(McItem {
                task: task.to_string(),
                prompt,
                choices: ["A", "B", "C", "D"]
                    .iter()
                    .map(|c| format!(" {c}"))
                    .collect(),
                label: ans - 1,
            })
        })
        .collect()
}

/// Each option's summed log-likelihood after prompt `p`: the prompt once, then every option at
/// once (right-padded) from copies of the prompt's KV cache; lm_head only where a token is read.
fn options_log_likelihood(
    model: &Exaone4,
    p: &[u32],
    conts: &[Vec<u32>],
) -> crate::Result<Vec<f64>> {
    let dev = model.device();
    let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
    if conts.iter().any(|c| c.is_empty()) {
        return Err(crate::Error::Invalid(
            "multiple choice: an option encodes to no tokens".into(),
        ));
    }
    // the prompt once (causal: its positions do not depend on what follows); its last
    // position scores every option's first token — all of it for one-token options (KMMLU's
    // letters), which need no cache
    let mut cache = match longest > 1 {
        true => Some(model.new_cache(1, p.len() + longest, vec![0])?),
        false => None,
    };
    let x = Tensor::from_vec(p.to_vec(), (1, p.len()), dev)?;
    let h = model.forward_hidden(&x, cache.as_mut())?;
    let first = model
        .log_probs(&h.narrow(1, p.len() - 1, 1)?)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut lls: Vec<f64> = conts.iter().map(|c| first[c[0] as usize] as f64).collect();
    if let Some(cache) = cache {
        // then every option's tokens but its last, one row each from a copy of the prompt's
        // cache, right-padded (the padding comes after every position that is read)
        let t = longest - 1;
        let mut flat = Vec::with_capacity(conts.len() * t);
        for c in conts {
            let mut s = c[..c.len() - 1].to_vec();
            s.resize(t, 0);
            flat.extend(s);
        }
        let mut rows = cache.repeat_rows(conts.len())?;
        let x = Tensor::from_vec(flat, (conts.len(), t), dev)?;
        let lp = model
            .log_probs(&model.forward_hidden(&x, Some(&mut rows))?)?
            .to_device(&Device::Cpu)?
            .to_vec3::<f32>()?;
        for (k, c) in conts.iter().enumerate() {
            for (j, &tok) in c.iter().enumerate().skip(1) {
                lls[k] += lp[k][j - 1][tok as usize] as f64;
            }
        }
    }
    Ok(lls)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct McResult {
    pub items: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// binomial standard error of acc
    pub acc_stderr: f64,
    /// 1 / mean number of choices
    pub chance: f64,
}

/// Which items a model got right, in the order scored.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct McItems {
    /// by summed log-likelihood (`acc`)
    pub right: Vec<bool>,
    /// by log-likelihood per byte of option text (`acc_norm`)
    pub right_norm: Vec<bool>,
}

/// Scores `items`: each option's log-likelihood given the prompt (as lm-eval's loglikelihood),
/// the prompt run once per item and its options continued from a copy of its KV cache, batched
/// and right-padded.
pub fn multiple_choice(
    model: &Exaone4,
    tok: &Tokenizer,
    items: &[McItem],
) -> crate::Result<McResult> {
    Ok(multiple_choice_per_item(model, tok, items)?.0)
}

/// [`multiple_choice`] (the same figures) and, item by item, whether each rule picked the label.
pub fn multiple_choice_per_item(
    model: &Exaone4,
    tok: &Tokenizer,
    items: &[McItem],
) -> crate::Result<(McResult, McItems)> {
    let mut per_item = McItems::default();
    let (mut right, mut right_norm, mut inv_choices) = (0usize, 0usize, 0f64);
    for it in items {
        let p = tok.encode(&it.prompt)?;
        let conts: Vec<Vec<u32>> = it
            .choices
            .iter()
            .map(|c| tok.encode(c))
            .collect::<std::result::Result<_, _>>()?;
        if p.is_empty() {
            return Err(crate::Error::Invalid(format!(
                "multiple choice ({}): an item's prompt is empty; options are scored after a prompt",
                it.task
            )));
        }
        let lls = options_log_likelihood(model, &p, &conts)?;
        // an option whose log-likelihood is NaN (a broken model) is never picked, and an item
        // with no finite option is wrong — as the evaluation would score garbage — not option 0
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        let mut best_norm = (f64::NEG_INFINITY, usize::MAX);
        for (k, &ll) in lls.iter().enumerate() {
            let bytes = it.choices[k].len().max(1) as f64;
            if !ll.is_finite() {
                continue;
            }
            if ll > best.0 {
                best = (ll, k);
            }
            if ll / bytes > best_norm.0 {
                best_norm = (ll / bytes, k);
            }
        }
        right += (best.1 == it.label) as usize;
        right_norm += (best_norm.1 == it.label) as usize;
        per_item.right.push(best.1 == it.label);
        per_item.right_norm.push(best_norm.1 == it.label);
        inv_choices += it.choices.len() as f64;
    }
    let n = items.len().max(1) as f64;
    let acc = right as f64 / n;
    let result = McResult {
        items: items.len(),
        acc,
        acc_norm: right_norm as f64 / n,
        acc_stderr: (acc * (1.0 - acc) / n).sqrt(),
        chance: n / inv_choices,
    };
    Ok((result, per_item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// Each option's log-likelihood after a prompt run once (its cache copied per option)
    /// equals the sum of the log-probabilities of its tokens when prompt and option run as one
    /// sequence through the reference forward (candle's ops, no fused kernels), for options of
    /// one, two and five tokens together.
    #[test]
    fn shared_prompt_equals_one_sequence_per_option() {
        let dev = Device::Cpu;
        let dir = crate::data::default_model_dir();
        let fast = crate::runtime::load_model(&dir, DType::F32, &dev).unwrap();
        let plain = crate::checkpoint::load_model(&dir, DType::F32, &dev).unwrap();
        let p: Vec<u32> = (0..37).map(|i| 20 + (i * 53) % 4000).collect();
        let conts: Vec<Vec<u32>> = vec![vec![900], vec![17, 3001], vec![5, 6, 7, 8, 9]];
        let ours = options_log_likelihood(&fast, &p, &conts).unwrap();
        for (k, c) in conts.iter().enumerate() {
            let mut s = p.clone();
            s.extend(c);
            let x = Tensor::from_vec(s.clone(), (1, s.len()), &dev).unwrap();
            let lp = plain
                .log_probs(&plain.forward_hidden(&x, None).unwrap())
                .unwrap()
                .to_vec3::<f32>()
                .unwrap();
            let want: f64 = c
                .iter()
                .enumerate()
                .map(|(j, &t)| lp[0][p.len() + j - 1][t as usize] as f64)
                .sum();
            assert!(
                (ours[k] - want).abs() < 1e-4 * want.abs().max(1.0),
                "option {k}: {} vs {want}",
                ours[k]
            );
        }
        let empty = options_log_likelihood(&fast, &p, &[vec![1], vec![]]);
        assert!(empty.is_err());
    }
}
