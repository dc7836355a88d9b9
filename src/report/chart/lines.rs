//! Line charts (the training loss).

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::super::layout::Rect;
use super::{tick_label, ChartResult, Drawn, Frame, FONT_NAME, MARGIN};

/// One named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines (one per series) on labelled axes, optionally a log y axis.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub frame: Frame,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_y: bool,
    /// where the legend goes: a region the data leave empty
    pub legend: LegendAt,
}

/// Where a line chart's legend sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LegendAt {
    #[default]
    UpperRight,
    UpperLeft,
    MiddleRight,
}

fn line_bounds(series: &[Series], log_y: bool) -> (f64, f64, f64, f64) {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(_, y)| y.is_finite() && (!log_y || *y > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, if log_y { 0.1 } else { 0.0 }, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    (
        x0,
        x1,
        if log_y { y0 * 0.9 } else { y0 - pad },
        if log_y { y1 * 1.1 } else { y1 + pad },
    )
}

/// Ticks of a log axis from `lo` to `hi`: 1, 2 and 5 times the powers of ten between them, or
/// every digit where those give fewer than three (plotters' own ticks on a log range narrower
/// than a few decades are the powers of ten alone: one tick, or none).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let pick = |ms: &[f64]| -> Vec<f64> {
        let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (k0..=k1)
            .flat_map(|k| ms.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let t = pick(&[1.0, 2.0, 5.0]);
    if t.len() >= 3 {
        t
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

impl LineChart {
    pub fn size(&self) -> (u32, u32) {
        (900, 540 + self.frame.height(900) as u32)
    }

    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> ChartResult<Drawn>
    where
        DB::ErrorType: 'static,
    {
        let (mut drawn, body) = self.frame.begin(root)?;
        let (x0, x1, y0, y1) = line_bounds(&self.series, self.log_y);
        if self.log_y {
            let y = (y0..y1).log_scale().with_key_points(log_ticks(y0, y1));
            self.lines_on(&body, x0..x1, y, &mut drawn)?;
        } else {
            self.lines_on(&body, x0..x1, y0..y1, &mut drawn)?;
        }
        Ok(drawn)
    }

    fn lines_on<DB, Y>(
        &self,
        body: &DrawingArea<DB, Shift>,
        x: std::ops::Range<f64>,
        y: Y,
        drawn: &mut Drawn,
    ) -> ChartResult<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(body)
            .margin(MARGIN)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(RangedCoordf64::from(x), y)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|v| tick_label(*v))
            .y_label_formatter(&|v| tick_label(*v))
            .label_style((FONT_NAME, 14))
            .draw()?;
        let (rx, ry) = chart.plotting_area().get_pixel_range();
        drawn.plot = Rect::new(rx.start, ry.start, rx.end, ry.end);
        for (i, s) in self.series.iter().enumerate() {
            let c = Palette99::pick(i).to_rgba();
            chart
                .draw_series(
                    LineSeries::new(
                        s.points.iter().copied().filter(|(_, y)| y.is_finite()),
                        c.stroke_width(2),
                    )
                    .point_size(3),
                )?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(match self.legend {
                LegendAt::UpperRight => SeriesLabelPosition::UpperRight,
                LegendAt::UpperLeft => SeriesLabelPosition::UpperLeft,
                LegendAt::MiddleRight => SeriesLabelPosition::MiddleRight,
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT_NAME, 14))
            .draw()?;
        Ok(())
    }
}
