//! Bar charts: one slot per bar, an axis that shows the differences, labels that never touch.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::super::layout::{text_size, Rect};
use super::{
    ensure_font, tick_label, ChartResult, Drawn, Frame, Placed, Role, ValueAxis, FONT_NAME,
    GUIDE_COLOR, MARGIN, MARK_COLOR, VALUE_AREA,
};

/// One bar: its label, value and optional ± error.
#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub err: Option<f64>,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64, err: Option<f64>) -> Self {
        Self {
            label: label.into(),
            value,
            err,
        }
    }
}

/// Bars, one per category, vertical or horizontal (one row per label: readable with many long
/// labels). Vertical bars whose labels do not fit their slots are drawn horizontally, unless the
/// labels are numbers (layer indices), which are then thinned to every k-th.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub frame: Frame,
    pub category_label: String,
    pub value_label: String,
    pub bars: Vec<Bar>,
    /// 0 means "none" (KL, tokens/s): the axis may start there. Where it does not (perplexity),
    /// the axis starts near the data.
    pub zero_meaningful: bool,
    pub horizontal: bool,
}

impl BarChart {
    pub fn axis(&self) -> ValueAxis {
        let pts: Vec<(f64, Option<f64>)> = self.bars.iter().map(|b| (b.value, b.err)).collect();
        ValueAxis::plan(&pts, self.zero_meaningful)
    }

    /// Whether the bars are drawn as rows (asked for, or vertical labels would not fit).
    pub fn drawn_horizontally(&self) -> bool {
        if self.horizontal {
            return true;
        }
        let (slot, widest) = self.vertical_fit();
        let numeric = self
            .bars
            .iter()
            .all(|b| b.label.trim().parse::<f64>().is_ok());
        widest + 6 > slot && !numeric
    }

    /// (slot width, widest label) in pixels for the vertical layout.
    fn vertical_fit(&self) -> (i32, i32) {
        ensure_font();
        let n = self.bars.len().max(1);
        let plot_w = VBAR_SIZE.0 as i32 - 2 * MARGIN - VALUE_AREA;
        let widest = self
            .bars
            .iter()
            .map(|b| text_size(&b.label, 13).0)
            .max()
            .unwrap_or(0);
        (plot_w / n as i32, widest)
    }

    fn label_area(&self) -> i32 {
        let widest = self
            .bars
            .iter()
            .map(|b| text_size(&b.label, 13).0)
            .max()
            .unwrap_or(40);
        (widest + 16).min(MAX_LABEL_AREA)
    }

    pub fn size(&self) -> (u32, u32) {
        ensure_font();
        let w = if self.drawn_horizontally() {
            1000
        } else {
            VBAR_SIZE.0
        };
        let body = if self.drawn_horizontally() {
            70 + 34 * self.bars.len().max(1) as u32
        } else {
            VBAR_SIZE.1
        };
        (w, body + self.frame.height(w as i32) as u32)
    }

    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> ChartResult<Drawn>
    where
        DB::ErrorType: 'static,
    {
        let (mut drawn, body) = self.frame.begin(root)?;
        let axis = self.axis();
        drawn.value_axis = Some(axis);
        let n = self.bars.len().max(1) as f64;
        let cats = -0.5..n - 0.5;
        let vals = axis.min..axis.max;
        let horizontal = self.drawn_horizontally();
        match (horizontal, axis.log) {
            (false, false) => self.bars_on(root, &body, cats, vals, &mut drawn)?,
            (false, true) => self.bars_on(root, &body, cats, vals.log_scale(), &mut drawn)?,
            (true, false) => self.bars_on(root, &body, vals, cats, &mut drawn)?,
            (true, true) => self.bars_on(root, &body, vals.log_scale(), cats, &mut drawn)?,
        }
        Ok(drawn)
    }

    /// Draws on `body` with coordinates `x` × `y`: categories on x when vertical, on y when
    /// horizontal (the first bar at the top).
    fn bars_on<DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        body: &DrawingArea<DB, Shift>,
        x: X,
        y: Y,
        drawn: &mut Drawn,
    ) -> ChartResult<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let axis = self.axis();
        let horizontal = self.drawn_horizontally();
        let n = self.bars.len();
        let mut b = ChartBuilder::on(body);
        b.margin(MARGIN);
        if horizontal {
            b.x_label_area_size(45).y_label_area_size(self.label_area());
            // room for the last value tick's text, centred on the plot's right edge
            b.margin_right(MARGIN + 24);
        } else {
            b.x_label_area_size(48).y_label_area_size(VALUE_AREA);
        }
        let mut chart = b.build_cartesian_2d(x, y)?;
        let value_desc = axis.describe(&self.value_label);
        let tick = |v: &f64| tick_label(*v);
        {
            let mut mesh = chart.configure_mesh();
            mesh.label_style((FONT_NAME, 13))
                .axis_desc_style((FONT_NAME, 14));
            if horizontal {
                mesh.x_desc(value_desc).x_label_formatter(&tick);
                mesh.y_labels(0).disable_y_mesh();
            } else {
                mesh.y_desc(value_desc).y_label_formatter(&tick);
                mesh.x_labels(0).disable_x_mesh();
                if !self.category_label.is_empty() {
                    mesh.x_desc(self.category_label.clone());
                }
            }
            mesh.draw()?;
        }
        let (px, py) = chart.plotting_area().get_pixel_range();
        drawn.plot = Rect::new(px.start, py.start, px.end, py.end);
        // categories → (x, y) in data space
        let at = |i: usize, v: f64| -> (f64, f64) {
            if horizontal {
                (v, (n - 1 - i) as f64)
            } else {
                (i as f64, v)
            }
        };
        let dots = axis.truncated();
        let base = if axis.log { axis.min } else { 0.0 };
        for (i, bar) in self.bars.iter().enumerate() {
            if !bar.value.is_finite() || (axis.log && bar.value <= 0.0) {
                drawn.marks.push(Rect::default());
                continue;
            }
            if dots {
                // a faint guide along the category; the dot goes over its error bar, below
                chart.plotting_area().draw(&PathElement::new(
                    vec![at(i, axis.min), at(i, axis.max)],
                    GUIDE_COLOR.stroke_width(1),
                ))?;
                let p = chart.backend_coord(&at(i, bar.value));
                drawn
                    .marks
                    .push(Rect::new(p.0 - 5, p.1 - 5, p.0 + 5, p.1 + 5));
            } else {
                let half = 0.38;
                let (a, z) = if horizontal {
                    (
                        (base, (n - 1 - i) as f64 - half),
                        (bar.value, (n - 1 - i) as f64 + half),
                    )
                } else {
                    ((i as f64 - half, base), (i as f64 + half, bar.value))
                };
                chart
                    .plotting_area()
                    .draw(&Rectangle::new([a, z], MARK_COLOR.mix(0.8).filled()))?;
                let (pa, pz) = (chart.backend_coord(&a), chart.backend_coord(&z));
                drawn.marks.push(Rect::new(
                    pa.0.min(pz.0),
                    pa.1.min(pz.1),
                    pa.0.max(pz.0),
                    pa.1.max(pz.1),
                ));
            }
            if let Some(e) = bar.err.filter(|e| e.is_finite() && *e > 0.0) {
                // a line with end caps, in pixels (plotters' ErrorBar rings the middle)
                let lo = chart.backend_coord(&at(i, (bar.value - e).max(axis.min)));
                let hi = chart.backend_coord(&at(i, (bar.value + e).min(axis.max)));
                let style = BLACK.stroke_width(2);
                let cap = |p: (i32, i32)| {
                    if horizontal {
                        vec![(p.0, p.1 - 5), (p.0, p.1 + 5)]
                    } else {
                        vec![(p.0 - 5, p.1), (p.0 + 5, p.1)]
                    }
                };
                root.draw(&PathElement::new(vec![lo, hi], style))?;
                root.draw(&PathElement::new(cap(lo), style))?;
                root.draw(&PathElement::new(cap(hi), style))?;
            }
            if dots {
                chart.plotting_area().draw(&Circle::new(
                    at(i, bar.value),
                    5,
                    MARK_COLOR.filled(),
                ))?;
            }
        }
        self.category_labels(root, &chart, horizontal, drawn)
    }

    /// The category labels, drawn by hand: centred under their slots (every k-th when numbers
    /// would touch), or right-aligned left of their rows.
    fn category_labels<DB, X, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        chart: &ChartContext<'_, DB, Cartesian2d<X, Y>>,
        horizontal: bool,
        drawn: &mut Drawn,
    ) -> ChartResult<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        let n = self.bars.len();
        let plot = drawn.plot;
        let step = if horizontal || n == 0 {
            1
        } else {
            let slot = plot.width() / n as i32;
            let widest = self
                .bars
                .iter()
                .map(|b| text_size(&b.label, 13).0)
                .max()
                .unwrap_or(0);
            ((widest + 6 + slot - 1) / slot.max(1)).max(1) as usize
        };
        for (i, bar) in self.bars.iter().enumerate() {
            if i % step != 0 {
                continue;
            }
            let text = if horizontal {
                fit(&bar.label, 13, self.label_area() - 16)
            } else {
                bar.label.clone()
            };
            let (tw, th) = text_size(&text, 13);
            let (x, y) = if horizontal {
                let c = chart.backend_coord(&(chart.x_range().start, (n - 1 - i) as f64));
                (plot.x0 - 8 - tw, c.1 - th / 2)
            } else {
                let c = chart.backend_coord(&(i as f64, chart.y_range().start));
                (c.0 - tw / 2, plot.y1 + 6)
            };
            root.draw(&Text::new(
                text.clone(),
                (x, y),
                (FONT_NAME, 13).into_font().color(&BLACK),
            ))?;
            drawn.texts.push(Placed {
                text,
                rect: Rect::new(x, y, x + tw, y + th),
                role: Role::Category,
            });
        }
        Ok(())
    }
}

const MAX_LABEL_AREA: i32 = 420;
const VBAR_SIZE: (u32, u32) = (900, 500);

/// `text` shortened with "…" to `width` pixels at `px`.
fn fit(text: &str, px: u32, width: i32) -> String {
    if text_size(text, px).0 <= width {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let s: String = chars.iter().collect::<String>() + "…";
        if text_size(&s, px).0 <= width {
            return s;
        }
    }
    "…".into()
}
