//! Healing a pruned model by logit distillation, by what is trained — norms only, norms and the
//! layers beside the cut, or the whole model — against the pruned model unhealed; and the
//! reference pipeline's own "distillation" (untie lm_head, train it on the teacher's answers)
//! with what it costs on disk.
//!
//!   cargo run --release --bin distill [-- --steps 100 --model DIR --device cuda]

use anyhow::Result;
use candle_core::Tensor;
use clap::Parser;
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::distill::{
    distill, reference_lm_head_step, DistillConfig, ParamGroup,
};
use exaone_compress::compress::prune::{drop_one_kl, lowest};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};
use exaone_compress::train::TrainConfig;
use serde_json::json;

/// Healing a pruned model by logit distillation, by what is trained, against the pruned model unhealed → reports/distill/.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
    /// decoder layers to drop (at least 1, fewer than the model has)
    #[arg(long, default_value_t = 1, value_parser = exaone_compress::study::at_least_one::<u64>)]
    drop_layers: u64,
    #[arg(long, default_value_t = 60)]
    steps: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    let mut s = Study::load("distill", a.study)?;
    let base = s.base.share();
    let kl_probe = &s.suite.kl_sequences[..4.min(s.suite.kl_sequences.len())];
    exaone_compress::study::check_drop_layers(a.drop_layers, base.layers.len())?;
    let drop = lowest(&drop_one_kl(&base, kl_probe, 4)?, a.drop_layers as usize);
    let kept: Vec<usize> = (0..base.layers.len())
        .filter(|i| !drop.contains(i))
        .collect();
    let pruned = base.with_layers(&kept)?;
    // the student's layers on either side of each cut
    let beside: Vec<usize> = kept
        .iter()
        .enumerate()
        .filter(|(_, &k)| drop.iter().any(|&d| k + 1 == d || k == d + 1))
        .map(|(j, _)| j)
        .collect();
    let val: Vec<Tensor> = s
        .calib
        .iter()
        .take(2)
        .map(|x| Tensor::from_vec(x.clone(), (1, x.len()), base.device()))
        .collect::<candle_core::Result<_>>()?;
    let (calib_len, seed) = (s.args.calib_len, s.args.seed);
    let cfg = |groups: Vec<ParamGroup>| DistillConfig {
        train: TrainConfig {
            steps: a.steps,
            lr: a.lr,
            warmup_steps: a.steps / 10,
            weight_decay: 0.0,
            eval_every: 0,
            ..Default::default()
        },
        temperature: 1.0,
        groups,
        batch: 8,
        seq_len: calib_len,
        seed: seed + 7,
    };
    s.measure(&Variant::original(), &base)?;
    s.measure(
        &Variant::new("pruned", format!("drop{drop:?}"), json!({"drop": drop})),
        &pruned,
    )?;
    let all_layers = ParamGroup::Layers((0..kept.len()).collect());
    for (name, groups) in [
        ("kd[norms]", vec![ParamGroup::Norms]),
        (
            "kd[norms + layers beside the cut]",
            vec![ParamGroup::Norms, ParamGroup::Layers(beside.clone())],
        ),
        ("kd[all layers]", vec![ParamGroup::Norms, all_layers]),
    ] {
        let mut student = pruned.share();
        let c = cfg(groups);
        let train = s.train.clone();
        let log = distill(&base, &mut student, &train, &val, &c)?;
        let last = log.last().map(|p| p.loss).unwrap_or(f64::NAN);
        let p = json!({"drop": drop, "groups": format!("{:?}", c.groups), "steps": a.steps, "lr": a.lr, "final_loss": last});
        s.measure(&Variant::new(format!("pruned + {name}"), name, p), &student)?;
    }
    // the reference pipeline's step, on the unpruned model as it ran it
    let mut lm = base.share();
    let prompts = samples(&s.val, 20, 48, s.args.seed + 3)?;
    let eos = s.suite.tokenizer.token_id("[|endofturn|]").unwrap_or(0);
    reference_lm_head_step(&base, &mut lm, &prompts, eos, 5e-6, 32)?;
    let p = json!({"untied": true, "prompts": 20, "lr": 5e-6, "epochs": 1});
    s.measure(
        &Variant::new("reference lm_head step", "untie + CE on teacher answers", p),
        &lm,
    )?;
    let notes = vec![
        format!("Student: the base without layer(s) {drop:?} (lowest drop-one KL); layers trained beside the cut: {beside:?} (student numbering)."),
        format!("Distillation: {} steps of 8 × {} tokens, lr {:.0e}, KL(teacher‖student) at T = 1.", a.steps, s.args.calib_len, a.lr),
        "The reference step unties lm_head, so the checkpoint carries a second vocab × hidden matrix: compare its size with the original's (400 MiB on EXAONE-4.0-1.2B).".into(),
    ];
    s.finish("Healing a pruned model", notes, &[])?;
    Ok(())
}
