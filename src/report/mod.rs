//! Reports: markdown and PNG charts drawn from results.

pub mod chart;
pub mod runtime;
pub mod serve;
pub mod study;
pub mod train;
