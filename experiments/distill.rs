//! Healing a pruned model by logit distillation, by what is trained — norms only, norms and the
//! layers beside the cut, or the whole model — against the pruned model unhealed; and the
//! reference pipeline's own "distillation" (untie lm_head, train it on the teacher's answers)
//! with what it costs on disk. The pruned and healed variants are made by their recipes (prune,
//! then distill from the base), so `--keep` keeps them and `exaone-compress apply` rebuilds them;
//! the reference step is not a recipe step and is measured in memory.
//!
//!   cargo run --release --bin distill [-- --steps 100 --model DIR --device cuda]

use anyhow::Result;
use clap::Parser;
use exaone_compress::compress::calibration::samples;
use exaone_compress::compress::distill::reference_lm_head_step;
use exaone_compress::compress::prune::{drop_one_kl, lowest, DropRule};
use exaone_compress::compress::recipe::{DistillStep, ModelRef, PruneStep, Step};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};
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
    /// distillation steps of each healed variant
    #[arg(long, default_value_t = 60, value_parser = exaone_compress::study::at_least_one::<usize>)]
    steps: usize,
    /// peak learning rate of each distillation
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
    // the student's layers on either side of each cut
    let beside: Vec<usize> = kept
        .iter()
        .enumerate()
        .filter(|(_, &k)| drop.iter().any(|&d| k + 1 == d || k == d + 1))
        .map(|(j, _)| j)
        .collect();
    let prune = Step::Prune(PruneStep::new(&DropRule::Explicit(drop.clone())));
    let kd = |train: Vec<String>| {
        let mut k = DistillStep::new(ModelRef::of(&s.dir)?, a.steps, None);
        (k.seq_len, k.seed, k.lr, k.train) = (s.args.calib_len, s.args.seed + 7, a.lr, train);
        anyhow::Ok(Step::Distill(k))
    };
    let norms = || vec!["norms".to_string()];
    let layers = beside.iter().map(|j| format!("layer:{j}"));
    let variants = [
        ("pruned", vec![prune.clone()]),
        ("pruned + kd[norms]", vec![prune.clone(), kd(norms())?]),
        (
            "pruned + kd[norms + layers beside the cut]",
            vec![
                prune.clone(),
                kd(norms().into_iter().chain(layers).collect())?,
            ],
        ),
        (
            "pruned + kd[all layers]",
            vec![
                prune.clone(),
                kd(vec!["norms".into(), "all-layers".into()])?,
            ],
        ),
    ];
    s.plan(2 + variants.len());
    s.measure(&Variant::original(), &base)?;
    for (name, steps) in variants {
        s.measure_recipe(name, steps)?;
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
