//! The training loop shared by the default model's pre-training and by distillation: AdamW,
//! linear warm-up + cosine decay, global gradient-norm clipping, periodic evaluation and
//! checkpoints, a progress bar with loss and tokens/s.

pub mod default_model;

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::{Exaone4, Mode};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub steps: usize,
    pub lr: f64,
    /// the cosine decays from `lr` to `lr * min_lr_ratio`
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// clip the global gradient norm to this (0: no clipping)
    pub grad_clip: f64,
    pub eval_every: usize,
    /// stop (after a final evaluation) once this much wall time has passed
    pub max_secs: Option<f64>,
    /// call the checkpoint hook every this many steps (0: never)
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            eval_every: 0,
            max_secs: None,
            checkpoint_every: 0,
        }
    }
}

impl TrainConfig {
    /// Learning rate at `step` (0-based): linear warm-up, then cosine to `lr · min_lr_ratio`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// Computes one step's loss and its token count.
pub type LossFn<'a> = dyn FnMut(&Exaone4, usize) -> Result<(Tensor, usize)> + 'a;
/// Computes the validation loss.
pub type EvalFn<'a> = dyn FnMut(&Exaone4) -> Result<f64> + 'a;

/// One logged point of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogPoint {
    pub step: usize,
    pub tokens: usize,
    pub lr: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub eval_loss: Option<f64>,
    pub secs: f64,
}

/// Turns chosen weights of `model` into trainable `Var`s, by HF name. Returns them in order.
/// A tied lm_head is the embedding, so training `model.embed_tokens.weight` trains both.
pub fn make_trainable(
    model: &mut Exaone4,
    select: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Var)>> {
    let mut vars = vec![];
    for (name, slot) in model.named_tensors_mut() {
        if select(&name) {
            let v = Var::from_tensor(&slot.detach())?;
            *slot = v.as_tensor().clone();
            vars.push((name, v));
        }
    }
    Ok(vars)
}

/// Detaches every weight again (drops the autograd graph) after training.
pub fn freeze(model: &mut Exaone4) {
    for (_, slot) in model.named_tensors_mut() {
        *slot = slot.detach();
    }
    model.mode = Mode::Inference;
}

/// √(Σ‖g‖²) over the gradients of `vars`; scales them in place so the norm is ≤ `max` (if > 0).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max: f64) -> Result<f64> {
    let mut sq = 0f64;
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max > 0.0 && norm > max {
        let s = max / (norm + 1e-6);
        for (_, v) in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * s)?);
            }
        }
    }
    Ok(norm)
}

/// Runs `cfg.steps` optimizer steps. `loss_fn(model, step)` returns the scalar loss of the
/// step's batch and the number of tokens in it; `eval_fn(model)` the validation loss.
pub fn train(
    model: &mut Exaone4,
    vars: &[(String, Var)],
    cfg: &TrainConfig,
    loss_fn: &mut LossFn,
    eval_fn: &mut EvalFn,
    label: &str,
) -> Result<Vec<LogPoint>> {
    train_with_checkpoints(
        model,
        vars,
        cfg,
        loss_fn,
        eval_fn,
        &mut |_, _| Ok(()),
        label,
    )
}

/// `train`, calling `checkpoint(model, step)` every `cfg.checkpoint_every` steps (e.g. to save
/// the weights with `checkpoint::save_model`, which writes atomically).
pub fn train_with_checkpoints(
    model: &mut Exaone4,
    vars: &[(String, Var)],
    cfg: &TrainConfig,
    loss_fn: &mut LossFn,
    eval_fn: &mut EvalFn,
    checkpoint: &mut dyn FnMut(&Exaone4, usize) -> Result<()>,
    label: &str,
) -> Result<Vec<LogPoint>> {
    model.mode = Mode::Differentiable;
    // weight decay only on matrices, as is usual (norm weights decayed towards 0 would fight
    // the post-norm layout)
    let (mats, vecs): (Vec<_>, Vec<_>) = vars
        .iter()
        .map(|(_, v)| v.clone())
        .partition(|v| v.rank() >= 2);
    let p = |wd| ParamsAdamW {
        lr: cfg.lr,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: 1e-8,
        weight_decay: wd,
    };
    let mut opt_m = AdamW::new(mats, p(cfg.weight_decay))?;
    let mut opt_v = AdamW::new(vecs, p(0.0))?;
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .expect("template"),
    );
    bar.set_prefix(label.to_string());
    let t0 = Instant::now();
    let mut log = vec![];
    let mut tokens = 0usize;
    for step in 0..cfg.steps {
        let lr = cfg.lr_at(step);
        opt_m.set_learning_rate(lr);
        opt_v.set_learning_rate(lr);
        let (loss, n) = loss_fn(model, step)?;
        tokens += n;
        let mut grads = loss.backward()?;
        let grad_norm = clip_grad_norm(&mut grads, vars, cfg.grad_clip)?;
        opt_m.step(&grads)?;
        opt_v.step(&grads)?;
        let loss_v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        if !loss_v.is_finite() {
            // step 0's loss comes before any update: the weights, not the learning rate
            if step == 0 {
                candle_core::bail!("{label}: the loss is {loss_v} before any update: a model's weights hold NaN or inf (`exaone-compress package --model DIR --check` finds them)");
            }
            candle_core::bail!("{label}: loss became {loss_v} at step {step} (lr {lr:.2e}); lower the learning rate");
        }
        let out_of_time = cfg.max_secs.is_some_and(|m| t0.elapsed().as_secs_f64() > m);
        let last = step + 1 == cfg.steps || out_of_time;
        let eval_loss = if (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || last {
            model.mode = Mode::Inference;
            let e = eval_fn(model)?;
            model.mode = Mode::Differentiable;
            Some(e)
        } else {
            None
        };
        let secs = t0.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {loss_v:.4}{} lr {lr:.2e} {:.0} tok/s",
            eval_loss
                .map(|e| format!(" val {e:.4}"))
                .unwrap_or_default(),
            tokens as f64 / secs
        ));
        bar.inc(1);
        if bar.is_hidden() && eval_loss.is_some() {
            // no terminal (a log file): one plain line per evaluation instead of the bar
            eprintln!(
                "{label} step {}/{} loss {loss_v:.4} val {:.4} lr {lr:.2e} {:.0} tok/s {secs:.0} s",
                step + 1,
                cfg.steps,
                eval_loss.unwrap_or(f64::NAN),
                tokens as f64 / secs
            );
        }
        log.push(LogPoint {
            step,
            tokens,
            lr,
            loss: loss_v,
            grad_norm,
            eval_loss,
            secs,
        });
        if cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0 {
            checkpoint(model, step + 1)?;
        }
        if out_of_time {
            bar.println(format!(
                "{label}: stopped after {} of {} steps (time limit)",
                step + 1,
                cfg.steps
            ));
            if bar.is_hidden() {
                eprintln!(
                    "{label}: stopped after {} of {} steps (time limit)",
                    step + 1,
                    cfg.steps
                );
            }
            break;
        }
    }
    bar.finish();
    model.mode = Mode::Inference;
    Ok(log)
}

/// Mean next-token cross-entropy of `ids` [b, t+1] (predict ids[:, 1:] from ids[:, :-1]).
pub fn lm_loss(model: &Exaone4, ids: &Tensor) -> Result<Tensor> {
    let (b, t1) = ids.dims2()?;
    let t = t1 - 1;
    let input = ids.narrow(1, 0, t)?;
    let target = ids.narrow(1, 1, t)?.flatten_all()?;
    let logits = model.forward(&input, None)?.reshape((b * t, ()))?;
    candle_nn::loss::cross_entropy(&logits, &target)
}
