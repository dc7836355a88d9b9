//! Distillation, on the shared training loop: logit KD (KL(teacher ‖ student) at a
//! temperature) on calibration text to heal a pruned or quantized student, training only the
//! parameter groups asked for; and the reference pipeline's lm_head-only step, reproduced.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::data::{rng, TokenStream};
use crate::model::cpu_exp::exp_minus_max;
use crate::model::grad_ops::{contiguous_f32, cpu_f32, with_f32};
use crate::model::{generate, Exaone4, GenerateOptions};
use crate::train::{freeze, make_trainable, train, LogPoint, TrainConfig};

/// What the student may change.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamGroup {
    /// every RMSNorm weight (QK-norms, post-norms, final norm): tiny, and heals a lot
    Norms,
    /// the embedding, which is also the lm_head while tied
    Embedding,
    /// untie the lm_head and train it alone (+ vocab × hidden parameters on disk)
    UntiedLmHead,
    /// every weight of these decoder layers
    Layers(Vec<usize>),
}

impl ParamGroup {
    /// Whether the weight `name` (e.g. `model.layers.3.post_attention_layernorm.weight`) is in
    /// the group.
    pub fn selects(&self, name: &str) -> bool {
        match self {
            ParamGroup::Norms => name.ends_with("norm.weight"),
            ParamGroup::Embedding => name == "model.embed_tokens.weight",
            ParamGroup::UntiedLmHead => name == "lm_head.weight",
            ParamGroup::Layers(ls) => ls
                .iter()
                .any(|i| name.starts_with(&format!("model.layers.{i}."))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DistillConfig {
    pub train: TrainConfig,
    pub temperature: f64,
    pub groups: Vec<ParamGroup>,
    pub batch: usize,
    pub seq_len: usize,
    pub seed: u64,
}

impl DistillConfig {
    /// Healing after compression, as the studies run it: `steps` of AdamW at lr 1e-3 (warm-up a
    /// tenth of the steps, no weight decay), KL(teacher ‖ student) at T = 1 on batches of 8
    /// windows of `seq_len` tokens, training `groups` only.
    pub fn heal(groups: Vec<ParamGroup>, steps: usize, seq_len: usize, seed: u64) -> Self {
        Self {
            train: TrainConfig {
                steps,
                lr: 1e-3,
                warmup_steps: steps / 10,
                weight_decay: 0.0,
                eval_every: 0,
                ..Default::default()
            },
            temperature: 1.0,
            groups,
            batch: 8,
            seq_len,
            seed,
        }
    }
}

/// Gives the student its own lm_head (a copy of the embedding) and marks the config untied.
pub fn untie(model: &mut Exaone4) -> Result<()> {
    if model.lm_head.is_none() {
        model.lm_head = Some(model.embed_tokens.copy()?);
        model.config.tie_word_embeddings = false;
    }
    Ok(())
}

/// Per-position KL(p ‖ q) [rows] and top-1 agreement [rows] for logits [rows, vocab].
pub fn kl_rows(base_logits: &Tensor, logits: &Tensor) -> Result<(Vec<f32>, Vec<bool>)> {
    use crate::runtime::cpu_pointwise::log_softmax_or_candle;
    let (lp, lq) = (
        log_softmax_or_candle(base_logits)?,
        log_softmax_or_candle(logits)?,
    );
    let kl = (lp.exp()? * (&lp - &lq)?)?.sum(D::Minus1)?;
    let a = base_logits.argmax(D::Minus1)?;
    let b = logits.argmax(D::Minus1)?;
    let same = a.eq(&b)?.to_dtype(DType::U8)?;
    let kl = kl.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    let same = same
        .to_device(&Device::Cpu)?
        .to_vec1::<u8>()?
        .into_iter()
        .map(|x| x == 1)
        .collect();
    Ok((kl, same))
}

/// T² · mean over positions of KL(softmax(t/T) ‖ softmax(s/T)); the teacher's logits are a
/// constant (no gradient reaches them). On the CPU in f32 it is one fused pass per row
/// ([`KdLoss`]), elsewhere [`kd_loss_unfused`].
pub fn kd_loss(
    teacher_logits: &Tensor,
    student_logits: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let v = teacher_logits.dim(D::Minus1)?;
    let t = teacher_logits.reshape(((), v))?;
    let s = student_logits.reshape(((), v))?;
    if cpu_f32(&t) && cpu_f32(&s) && t.dims() == s.dims() && temperature > 0.0 {
        return s.contiguous()?.apply_op1(KdLoss {
            teacher: t.detach().contiguous()?,
            temperature,
        });
    }
    kd_loss_unfused(teacher_logits, student_logits, temperature)
}

/// [`kd_loss`] as candle tensor ops (any device and dtype; the teacher's logits detached).
pub fn kd_loss_unfused(
    teacher_logits: &Tensor,
    student_logits: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let v = teacher_logits.dim(D::Minus1)?;
    let t = (teacher_logits.detach().reshape(((), v))? / temperature)?;
    let s = (student_logits.reshape(((), v))? / temperature)?;
    let lt = candle_nn::ops::log_softmax(&t, D::Minus1)?;
    let ls = candle_nn::ops::log_softmax(&s, D::Minus1)?;
    let kl = (lt.exp()? * (lt - ls)?)?.sum(D::Minus1)?.mean_all()?;
    kl * (temperature * temperature)
}

/// The distillation loss over student logits [rows, vocab] (f32, CPU) against the teacher's
/// logits of the same shape, fused: a row's KL is one pass over its logits and its gradient
/// T · (softmax(s/T) − softmax(t/T)) / rows another, where candle's expression of the same loss
/// allocates and walks about 17 tensors of the logits' size forward and 30 backward (on two
/// cores, 8 × 256 positions over a 4,096-word vocabulary: 0.59 s a step, 0.15 s fused). Sums in
/// f64.
#[derive(Debug)]
struct KdLoss {
    /// [rows, vocab], contiguous
    teacher: Tensor,
    temperature: f64,
}

/// exp(x/T − max) of a row into `e`; returns the max and Σ exp (summed in f64, in order).
fn row_exp(x: &[f32], inv_t: f32, e: &mut [f32]) -> (f32, f64) {
    for (e, &v) in e.iter_mut().zip(x) {
        *e = v * inv_t;
    }
    let (m, _) = exp_minus_max(e);
    (m, e.iter().map(|&e| e as f64).sum())
}

/// Softmax(x/T) of a row into `p` (f32, the exponentials summed in f64); returns log Σ exp(x/T).
fn row_softmax(x: &[f32], inv_t: f32, p: &mut [f32]) -> f32 {
    let (m, sum) = row_exp(x, inv_t, p);
    let inv = (1.0 / sum) as f32;
    p.iter_mut().for_each(|p| *p *= inv);
    m + sum.ln() as f32
}

impl candle_core::CustomOp1 for KdLoss {
    fn name(&self) -> &'static str {
        "kd-loss"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let sv = contiguous_f32(s, l, "kd-loss")?;
        let v = self.teacher.dim(1)?;
        let inv_t = (1.0 / self.temperature) as f32;
        let rows = sv.len() / v.max(1);
        // KL of a row = Σ p (log p − s/T) + log Σ exp(s/T), p the teacher's softmax
        let total = with_f32(&self.teacher, |tv| {
            if sv.len() != tv.len() || v == 0 {
                return None;
            }
            Some(
                sv.par_chunks(v)
                    .zip(tv.par_chunks(v))
                    .map_init(
                        || (vec![0f32; v], vec![0f32; v]),
                        |(p, e), (s, t)| {
                            let lt = row_softmax(t, inv_t, p);
                            let (m, sum_exp) = row_exp(s, inv_t, e);
                            let mut cross = 0f64;
                            for ((&p, &t), &s) in p.iter().zip(t).zip(s) {
                                cross += p as f64 * ((t * inv_t - lt) - s * inv_t) as f64;
                            }
                            cross + m as f64 + sum_exp.ln()
                        },
                    )
                    .collect::<Vec<f64>>(),
            )
        })?;
        let Some(row_kl) = total else {
            candle_core::bail!("kd-loss: the student's and the teacher's logits differ in shape");
        };
        // summed in row order: the same loss whatever the threads
        let total: f64 = row_kl.iter().sum();
        let loss = total / rows as f64 * self.temperature * self.temperature;
        Ok((
            candle_core::CpuStorage::F32(vec![loss as f32]),
            candle_core::Shape::from(()),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        use rayon::prelude::*;
        let v = self.teacher.dim(1)?.max(1);
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let inv_t = (1.0 / self.temperature) as f32;
        let arg = arg.contiguous()?;
        let out = with_f32(&arg, |sv| {
            with_f32(&self.teacher, |tv| {
                let scale = (g * self.temperature / (sv.len() / v) as f64) as f32;
                let mut out = vec![0f32; sv.len()];
                out.par_chunks_mut(v)
                    .zip(sv.par_chunks(v).zip(tv.par_chunks(v)))
                    .for_each_init(
                        || vec![0f32; v],
                        |p, (o, (s, t))| {
                            row_softmax(t, inv_t, p);
                            row_softmax(s, inv_t, o);
                            for (o, &p) in o.iter_mut().zip(p.iter()) {
                                *o = scale * (*o - p);
                            }
                        },
                    );
                out
            })
        })??;
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// The cache's bytes held and its entries, by (teacher, window ids).
type Held = (usize, std::collections::HashMap<(String, Vec<u32>), Tensor>);

/// The teacher's logits of the windows distillations draw, kept so that every distillation
/// from the same teacher on the same windows (a study heals several students with the same
/// seed) runs the teacher once. A cached tensor is the one the teacher's forward returned, so a
/// run with the cache and one without train the student bit for bit alike. Entries are keyed by
/// the teacher's identity (`teacher`: its weights hash, dtype and device, as the caller names it)
/// and the window ids; beyond `budget_bytes` nothing more is kept (the teacher then runs again).
#[derive(Debug)]
pub struct TeacherCache {
    budget_bytes: usize,
    inner: std::sync::Mutex<Held>,
}

impl TeacherCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            inner: Default::default(),
        }
    }

    /// The teacher's logits of `x` [b, t]: cached, or computed by `forward` (and kept while the
    /// budget allows).
    pub fn logits(
        &self,
        teacher: &str,
        x: &Tensor,
        forward: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let ids = x.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<u32>()?;
        let key = (teacher.to_string(), ids);
        if let Some(t) = self.lock().1.get(&key) {
            return Ok(t.clone());
        }
        let t = forward()?;
        let bytes = t.elem_count() * t.dtype().size_in_bytes();
        let mut g = self.lock();
        if g.0 + bytes <= self.budget_bytes {
            g.0 += bytes;
            g.1.insert(key, t.clone());
        }
        Ok(t)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // a panic while holding the lock leaves a consistent map (inserts are whole)
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `x Wᵀ` for a Linear whose weight is not trained, with a backward that returns the input's
/// gradient only: candle's matmul backward also computes the weight's gradient (as much work
/// as the forward), wasted on a frozen weight. The forward and the input's gradient are the
/// same candle expressions as the Linear's own, so training with it is bit for bit the same.
/// CPU f32 only (elsewhere the Linear keeps candle's path).
#[derive(Debug)]
struct FrozenMatmul {
    /// the weight transposed, [in, out] (a view, as the Linear's forward takes it)
    w_t: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = contiguous_f32(s, l, "frozen-linear")?;
        let x = Tensor::from_slice(x, l.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.w_t)?.contiguous()?;
        let v = with_f32(&y, |v| v.to_vec())?;
        Ok((candle_core::CpuStorage::F32(v), y.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w_t.t()?)?))
    }
}

impl crate::model::LinearKernel for FrozenMatmul {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(FrozenMatmul {
            w_t: self.w_t.clone(),
        })
    }
}

/// Puts [`FrozenMatmul`] on every Linear of `model` whose weight `trained` does not select,
/// where it applies (CPU, f32, no activation quantization, no kernel already); returns how
/// many; [`remove_frozen_kernels`] takes them off.
pub fn install_frozen_kernels(
    model: &mut Exaone4,
    trained: &dyn Fn(&str) -> bool,
) -> Result<usize> {
    if !model.device().is_cpu() || model.dtype() != DType::F32 {
        return Ok(0);
    }
    let mut n = 0;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (name, lin) in layer.linears_mut() {
            let w = format!("model.layers.{i}.{name}.weight");
            if trained(&w) || lin.act_quant.is_some() || lin.kernel.is_some() {
                continue;
            }
            lin.kernel = Some(std::sync::Arc::new(FrozenMatmul {
                w_t: lin.weight.t()?,
            }));
            n += 1;
        }
    }
    // the lm_head (the embedding while tied): its weight gradient is as much work as the
    // product, a tenth of a step's matmuls on the default model
    let head = match model.lm_head {
        Some(_) => "lm_head.weight",
        None => "model.embed_tokens.weight",
    };
    if !trained(head) && model.head_kernel.is_none() {
        let w = model.lm_head.as_ref().unwrap_or(&model.embed_tokens);
        model.head_kernel = Some(std::sync::Arc::new(FrozenMatmul { w_t: w.t()? }));
        n += 1;
    }
    Ok(n)
}

/// Takes the kernels [`install_frozen_kernels`] put on `model` off again.
pub fn remove_frozen_kernels(model: &mut Exaone4) {
    let ours = |k: &std::sync::Arc<dyn crate::model::LinearKernel>| {
        format!("{k:?}").starts_with("FrozenMatmul")
    };
    if model.head_kernel.as_ref().is_some_and(ours) {
        model.head_kernel = None;
    }
    for layer in model.layers.iter_mut() {
        for (_, lin) in layer.linears_mut() {
            if lin.kernel.as_ref().is_some_and(ours) {
                lin.kernel = None;
            }
        }
    }
}

/// Logit distillation of `student` towards `teacher` on windows of `stream`.
pub fn distill(
    teacher: &Exaone4,
    student: &mut Exaone4,
    stream: &TokenStream,
    val: &[Tensor],
    cfg: &DistillConfig,
) -> Result<Vec<LogPoint>> {
    distill_cached(teacher, student, stream, val, cfg, None)
}

/// [`distill`], the teacher's logits taken from (and kept in) `cache` under the teacher's name
/// `cache.1`: the same student bit for bit, the teacher run once per window set.
pub fn distill_cached(
    teacher: &Exaone4,
    student: &mut Exaone4,
    stream: &TokenStream,
    val: &[Tensor],
    cfg: &DistillConfig,
    cache: Option<(&TeacherCache, &str)>,
) -> Result<Vec<LogPoint>> {
    if cfg.groups.contains(&ParamGroup::UntiedLmHead) {
        untie(student)?;
    }
    let groups = cfg.groups.clone();
    let vars = make_trainable(student, &|n| groups.iter().any(|g| g.selects(n)))?;
    if vars.is_empty() {
        candle_core::bail!("distill: the chosen parameter groups select no weights");
    }
    install_frozen_kernels(student, &|n| groups.iter().any(|g| g.selects(n)))?;
    let mut r = rng(cfg.seed);
    let dev = student.device().clone();
    let temp = cfg.temperature;
    let log = train(
        student,
        &vars,
        &cfg.train,
        &mut |s, _| {
            let x = stream.sample_windows(cfg.batch, cfg.seq_len, &mut r, &dev)?;
            let run = || {
                teacher
                    .forward(&x.to_device(teacher.device())?, None)?
                    .to_device(&dev)
            };
            let t = match cache {
                Some((c, name)) => c.logits(name, &x, run)?,
                None => run()?,
            }
            .detach();
            Ok((
                kd_loss(&t, &s.forward(&x, None)?, temp)?,
                cfg.batch * cfg.seq_len,
            ))
        },
        &mut |s| {
            let mut tot = 0.0;
            for x in val {
                let t = teacher
                    .forward(&x.to_device(teacher.device())?, None)?
                    .to_device(&dev)?;
                tot += kd_loss(&t, &s.forward(x, None)?, 1.0)?.to_scalar::<f32>()? as f64;
            }
            Ok(tot / val.len().max(1) as f64)
        },
        "distill",
    );
    remove_frozen_kernels(student);
    let log = log?;
    freeze(student);
    Ok(log)
}

/// The reference pipeline's "distillation": untie lm_head and train it alone with
/// cross-entropy on answers the teacher generated for `prompts` (20 prompts, lr 5e-6, one
/// epoch in the original). Kept to show what it does (almost nothing) and what it costs
/// (vocab × hidden more parameters on disk).
pub fn reference_lm_head_step(
    teacher: &Exaone4,
    student: &mut Exaone4,
    prompts: &[Vec<u32>],
    eos: u32,
    lr: f64,
    max_new: usize,
) -> Result<Vec<LogPoint>> {
    let mut seqs = vec![];
    for p in prompts {
        let ans = generate(
            teacher,
            std::slice::from_ref(p),
            &GenerateOptions::greedy(max_new, vec![eos]),
        )?
        .remove(0);
        let mut s = p.clone();
        s.extend(&ans);
        seqs.push((p.len(), s));
    }
    untie(student)?;
    let vars = make_trainable(student, &|n| n == "lm_head.weight")?;
    let dev = student.device().clone();
    let cfg = TrainConfig {
        steps: seqs.len(),
        lr,
        warmup_steps: 0,
        min_lr_ratio: 1.0,
        weight_decay: 0.0,
        ..Default::default()
    };
    let log = train(
        student,
        &vars,
        &cfg,
        &mut |s, step| {
            let (plen, seq) = (seqs[step].0, &seqs[step].1);
            let n = seq.len();
            let x = Tensor::from_vec(seq[..n - 1].to_vec(), (1, n - 1), &dev)?;
            let y = Tensor::from_vec(seq[plen..].to_vec(), n - plen, &dev)?;
            let logits = s
                .forward(&x, None)?
                .squeeze(0)?
                .narrow(0, plen - 1, n - plen)?;
            Ok((candle_nn::loss::cross_entropy(&logits, &y)?, n - plen))
        },
        &mut |_| Ok(f64::NAN),
        "lm_head (reference)",
    )?;
    freeze(student);
    Ok(log)
}
