//! Evaluation: perplexity, divergence from the base, task accuracy, speed, the score proxy.

pub mod act_quant;
pub mod divergence;
pub mod generated;
pub mod paired;
pub mod perplexity;
pub mod projection;
pub mod speed;
pub mod tasks;

pub use divergence::{divergence, divergence_per_token, Divergence};
pub use paired::{
    accuracy_difference, kl_mean, kl_mean_by_sequence, mcnemar, paired_accuracy, paired_mean,
    ppl_ratio, ppl_ratio_by_sequence, recommend, score, speed_norm, AccuracyDiff, Candidate,
    Estimate, McNemar, PairedAccuracy, PairedMean, PplRatio, Recommendation,
};
pub use perplexity::{perplexity, perplexity_per_token, unigram_perplexity, Perplexity};
pub use projection::{
    compare_with_public, project, project_each, project_variant, Efficiencies, GpuSpec, Projection,
    PublicComparison, Roofline, StepLoad, StepTrace, VariantCost,
};
pub use speed::{
    measure as measure_speed, measure_checkpoint as measure_checkpoint_speed, Speed, Timing,
};
pub use tasks::{multiple_choice, multiple_choice_per_item, McItem, McItems, McResult};
