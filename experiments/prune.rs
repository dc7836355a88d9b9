//! Which layers to drop: every layer's Block Influence (1 − cos(h_in, h_out)) and its measured
//! drop-one KL, then the same number of layers dropped by each rule — uniform (the reference
//! pipeline's), last, lowest Block Influence, lowest measured KL — and each result measured.
//! Every variant is made by its recipe (the layers it drops), so `--keep` keeps it and
//! `exaone-compress apply` rebuilds it.
//!
//!   cargo run --release --bin prune [-- --drop-layers 2 --model DIR --device cuda]

use anyhow::Result;
use candle_core::Tensor;
use clap::Parser;
use exaone_compress::compress::prune::{block_influence, choose, drop_one_kl, lowest, DropRule};
use exaone_compress::compress::recipe::{PruneStep, Step};
use exaone_compress::record::Variant;
use exaone_compress::study::{Study, StudyArgs};

/// Which layers to drop: Block Influence and drop-one KL, then each dropping rule's result measured → reports/prune/.
#[derive(Parser)]
#[command(long_about = None)]
struct Args {
    #[command(flatten)]
    study: StudyArgs,
    /// decoder layers to drop (at least 1, fewer than the model has)
    #[arg(long, default_value_t = 1, value_parser = exaone_compress::study::at_least_one::<u64>)]
    drop_layers: u64,
}

fn main() -> std::process::ExitCode {
    exaone_compress::error::exit(run())
}

fn run() -> Result<()> {
    let a = exaone_compress::study::parse_args::<Args>();
    let mut s = Study::load("prune", a.study)?;
    let base = s.base.share();
    exaone_compress::study::check_drop_layers(a.drop_layers, base.layers.len())?;
    let n = a.drop_layers as usize;
    let probe: Vec<u32> = s.calib.iter().take(8).flatten().copied().collect();
    let len = s.calib[0].len();
    let ids = Tensor::from_vec(probe, (s.calib.len().min(8), len), base.device())?;
    let bi = block_influence(&base, &ids)?;
    let kl_probe = s.suite.kl_sequences[..4.min(s.suite.kl_sequences.len())].to_vec();
    let kl = drop_one_kl(&base, &kl_probe, 4)?;
    for (i, (b, k)) in bi.iter().zip(&kl).enumerate() {
        s.results.add(
            &Variant::original(),
            &format!("block_influence_layer_{i}"),
            *b,
            None,
            "",
        );
        s.results.add(
            &Variant::original(),
            &format!("drop_one_kl_layer_{i}"),
            *k,
            None,
            "nats",
        );
    }
    let rules = [
        ("uniform", DropRule::Uniform(n)),
        ("last", DropRule::Last(n)),
        ("lowest Block Influence", DropRule::Explicit(lowest(&bi, n))),
        ("lowest drop-one KL", DropRule::Explicit(lowest(&kl, n))),
    ];
    s.plan(1 + rules.len());
    s.measure(&Variant::original(), &base)?;
    let mut notes = vec![];
    for (name, rule) in rules {
        // the layers each rule chose, as the recipe's explicit list (the measured rules'
        // scores are this study's; the list is what rebuilds the variant)
        let drop = choose(&base, &rule, None)?;
        let step = Step::Prune(PruneStep::new(&DropRule::Explicit(drop.clone())));
        s.measure_recipe(&format!("{name} {drop:?}"), vec![step])?;
        notes.push(format!("{name}: drops {drop:?}"));
    }
    notes.push(format!(
        "Block Influence on {} × {len} calibration tokens; drop-one KL on {} × 256 validation tokens.",
        ids.dim(0)?,
        kl_probe.len()
    ));
    s.finish("Which layers to drop", notes, &[])?;
    Ok(())
}
