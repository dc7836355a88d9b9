//! Scatter charts with a Pareto front, their point labels placed so that none overlaps.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::super::layout::{place_labels, text_size, Rect, Segment};
use super::{
    tick_label, ChartResult, Drawn, Frame, Placed, Role, FONT_NAME, MARGIN, MARK_COLOR, VALUE_AREA,
};

/// A labelled point with an optional vertical error bar.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub y_err: Option<f64>,
}

/// Indices of the Pareto-optimal points when lower x and lower y are both better.
pub fn pareto_front(points: &[Point]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            !points.iter().enumerate().any(|(j, q)| {
                j != i
                    && q.x <= points[i].x
                    && q.y <= points[i].y
                    && (q.x < points[i].x || q.y < points[i].y)
            })
        })
        .collect();
    front.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x));
    front
}

/// The axis range for data from `lo` to `hi` with `share` of the span added on each side; a
/// span of (almost) nothing — one point, or equal values — gets 5% of the value instead, so the
/// ticks say something (they all read the same value otherwise).
pub fn padded_range(lo: f64, hi: f64, share: f64) -> std::ops::Range<f64> {
    let scale = lo.abs().max(hi.abs()).max(1e-12);
    let pad = if hi - lo > 1e-6 * scale {
        (hi - lo) * share
    } else {
        0.05 * scale
    };
    (lo - pad)..(hi + pad)
}

/// Points with labels and error bars; the Pareto front (lower x, lower y better) is joined by a
/// red line. Labels are placed so that none overlaps another label or point.
#[derive(Clone, Debug)]
pub struct ScatterChart {
    pub frame: Frame,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<Point>,
}

impl ScatterChart {
    fn frame(&self) -> Frame {
        self.frame
            .clone()
            .with_note("red: the Pareto front (lower is better on both axes)")
    }

    pub fn size(&self) -> (u32, u32) {
        (900, 600 + self.frame().height(900) as u32)
    }

    pub(super) fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> ChartResult<Drawn>
    where
        DB::ErrorType: 'static,
    {
        let (mut drawn, body) = self.frame().begin(root)?;
        let points = &self.points;
        let xs = points.iter().map(|p| p.x).filter(|x| x.is_finite());
        let ys = points
            .iter()
            .flat_map(|p| [p.y - p.y_err.unwrap_or(0.0), p.y + p.y_err.unwrap_or(0.0)])
            .filter(|y| y.is_finite());
        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        let (x0, x1, y0, y1) = if x0 > x1 || y0 > y1 {
            (0.0, 1.0, 0.0, 1.0)
        } else {
            (x0, x1, y0, y1)
        };
        let mut chart = ChartBuilder::on(&body)
            .margin(MARGIN)
            .x_label_area_size(45)
            .y_label_area_size(VALUE_AREA)
            .build_cartesian_2d(padded_range(x0, x1, 0.15), padded_range(y0, y1, 0.1))?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|v| tick_label(*v))
            .y_label_formatter(&|v| tick_label(*v))
            .label_style((FONT_NAME, 13))
            .axis_desc_style((FONT_NAME, 14))
            .draw()?;
        let (rx, ry) = chart.plotting_area().get_pixel_range();
        drawn.plot = Rect::new(rx.start, ry.start, rx.end, ry.end);
        let front = pareto_front(points);
        chart.draw_series(LineSeries::new(
            front.iter().map(|&i| (points[i].x, points[i].y)),
            RED.stroke_width(2),
        ))?;
        let mut anchors = vec![];
        for (i, p) in points.iter().enumerate() {
            let c = if front.contains(&i) {
                RED.to_rgba()
            } else {
                MARK_COLOR.to_rgba()
            };
            if let Some(e) = p.y_err {
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                    p.x,
                    p.y - e,
                    p.y,
                    p.y + e,
                    c.stroke_width(1),
                    8,
                )))?;
            }
            chart.draw_series(std::iter::once(Circle::new((p.x, p.y), 5, c.filled())))?;
            let a = chart.backend_coord(&(p.x, p.y));
            drawn
                .marks
                .push(Rect::new(a.0 - 5, a.1 - 5, a.0 + 5, a.1 + 5));
            anchors.push(a);
        }
        // lines labels must not cross: the front, and every error bar
        let mut lines: Vec<Segment> = front
            .windows(2)
            .map(|w| (anchors[w[0]], anchors[w[1]]))
            .collect();
        for p in points {
            if let Some(e) = p.y_err {
                let (a, b) = (
                    chart.backend_coord(&(p.x, p.y - e)),
                    chart.backend_coord(&(p.x, p.y + e)),
                );
                lines.push((a, b));
            }
        }
        let sizes: Vec<(i32, i32)> = points.iter().map(|p| text_size(&p.label, 13)).collect();
        let boxes = place_labels(&anchors, &sizes, drawn.plot, &drawn.marks, &lines);
        for ((p, a), r) in points.iter().zip(&anchors).zip(&boxes) {
            let (cy, h) = ((r.y0 + r.y1) / 2, r.y1 - r.y0);
            if (cy - a.1).abs() > h / 2 {
                // moved off its point's line: a leader line from the point to the label
                let ex = if r.x0 > a.0 { r.x0 - 1 } else { r.x1 + 1 };
                root.draw(&PathElement::new(
                    vec![*a, (ex, cy)],
                    RGBColor(140, 140, 140).stroke_width(1),
                ))?;
            }
            root.draw(&Text::new(
                p.label.clone(),
                (r.x0, r.y0),
                (FONT_NAME, 13).into_font().color(&BLACK),
            ))?;
            drawn.texts.push(Placed {
                text: p.label.clone(),
                rect: *r,
                role: Role::PointLabel,
            });
        }
        Ok(drawn)
    }
}
