//! PNG charts with plotters. The font is compiled in (DejaVu Sans, data/fonts), so charts draw
//! the same on a machine with no fonts installed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

static FONT: Once = Once::new();

fn ensure_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .ok()
            .expect("DejaVu Sans is a valid font");
    });
}

pub type ChartResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn bounds(series: &[Series], log_y: bool) -> (f64, f64, f64, f64) {
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
        return (0.0, 1.0, 0.0, 1.0);
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

/// Lines (one per series) on labelled axes, optionally a log y axis.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> ChartResult<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1, y0, y1) = bounds(series, log_y);
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 14))
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let c = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied().filter(|(_, y)| y.is_finite()),
                        c.stroke_width(2),
                    ))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }};
    }
    if log_y {
        draw!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
    } else {
        draw!(b.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    root.present()?;
    Ok(())
}

/// A labelled point with an optional vertical error bar.
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

/// Points with labels and error bars; the Pareto front (lower x, lower y better) is joined by a line.
pub fn scatter_pareto(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> ChartResult<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = points.iter().map(|p| p.x).filter(|x| x.is_finite());
    let ys = points
        .iter()
        .flat_map(|p| [p.y - p.y_err.unwrap_or(0.0), p.y + p.y_err.unwrap_or(0.0)])
        .filter(|y| y.is_finite());
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (px, py) = (((x1 - x0) * 0.15).max(1e-9), ((y1 - y0) * 0.1).max(1e-9));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    let front = pareto_front(points);
    chart
        .draw_series(LineSeries::new(
            front.iter().map(|&i| (points[i].x, points[i].y)),
            RED.stroke_width(2),
        ))?
        .label("Pareto front (lower is better on both axes)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    for (i, p) in points.iter().enumerate() {
        let c = if front.contains(&i) {
            RED.to_rgba()
        } else {
            BLUE.to_rgba()
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
        chart.draw_series(std::iter::once(
            EmptyElement::at((p.x, p.y))
                + Text::new(p.label.clone(), (8, -6), ("sans-serif", 13).into_font()),
        ))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The label of a bar's segment (none past the last bar).
fn segment_label(s: &SegmentValue<usize>, label: &dyn Fn(usize) -> Option<String>) -> String {
    match s {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => label(*i).unwrap_or_default(),
        SegmentValue::Last => String::new(),
    }
}

/// Vertical bars, one per label.
pub fn bars(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    values: &[(String, f64)],
) -> ChartResult<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = values.iter().map(|v| v.1).fold(0f64, f64::max).max(1e-12) * 1.1;
    let n = values.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(n)
        .disable_x_mesh()
        .x_label_formatter(&|x| segment_label(x, &|i| values.get(i).map(|v| v.0.clone())))
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.mix(0.7).filled())
            .margin(8)
            .data(values.iter().enumerate().map(|(i, v)| (i, v.1))),
    )?;
    root.present()?;
    Ok(())
}

/// Horizontal bars with optional ± error bars, one row per label: readable with many long
/// labels (variant names), unlike vertical bars.
pub fn hbars(
    path: &Path,
    title: &str,
    value_label: &str,
    values: &[(String, f64, Option<f64>)],
) -> ChartResult<()> {
    ensure_font();
    let n = values.len().max(1);
    let height = (110 + 34 * n) as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let xmax = values
        .iter()
        .map(|v| v.1 + v.2.unwrap_or(0.0))
        .fold(0f64, f64::max)
        .max(1e-12)
        * 1.08;
    let label_w = values
        .iter()
        .map(|v| v.0.chars().count())
        .max()
        .unwrap_or(8) as u32
        * 7
        + 20;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(label_w.min(420))
        .build_cartesian_2d(0f64..xmax, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc(value_label)
        .y_labels(n)
        .disable_y_mesh()
        .y_label_formatter(&|y| segment_label(y, &|i| values.get(i).map(|v| v.0.clone())))
        .label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(
        Histogram::horizontal(&chart)
            .style(BLUE.mix(0.6).filled())
            .margin(6)
            .data(values.iter().enumerate().map(|(i, v)| (i, v.1))),
    )?;
    chart.draw_series(values.iter().enumerate().filter_map(|(i, v)| {
        v.2.map(|e| {
            ErrorBar::new_horizontal(
                SegmentValue::CenterOf(i),
                v.1 - e,
                v.1,
                v.1 + e,
                BLACK.stroke_width(2),
                10,
            )
        })
    }))?;
    root.present()?;
    Ok(())
}

/// A chart written to a PNG file, shown inline in an evcxr (Jupyter) notebook when it is the
/// value of a cell.
#[derive(Debug)]
pub struct Png(pub std::path::PathBuf);

impl Png {
    pub fn evcxr_display(&self) {
        use base64::Engine;
        match std::fs::read(&self.0) {
            Ok(bytes) => println!(
                "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            Err(e) => println!("{}: {e}", self.0.display()),
        }
    }
}
