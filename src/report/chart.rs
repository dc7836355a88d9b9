//! Charts with plotters, drawn from specs (data): a [`BarChart`], a [`ScatterChart`] or a
//! [`LineChart`], each with a [`Frame`] (title, a caveat drawn in red under it, notes). The font
//! is compiled in (DejaVu Sans, data/fonts), so charts draw the same on a machine with no fonts
//! installed. Drawing returns a [`Drawn`]: where the chart put its texts and marks, in pixels, so
//! tests can check what a reader sees (no overlapping labels, no empty slot, the caveat drawn).
//!
//! What the specs decide for the reader:
//! - a bar chart has exactly one slot per bar;
//! - a value axis spanning a decade and a half or more is logarithmic; otherwise it starts at 0 where 0
//!   is meaningful, and near the data where it is not (perplexity), which its label says and
//!   which is then drawn as dots with error bars, not bars whose lengths would mislead;
//! - point labels of a scatter never overlap each other or another point: a label that cannot
//!   sit beside its point is moved up or down and joined to it by a leader line.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::layout::{text_size, wrap, Rect};
pub use super::layout::{Placed, Role, ValueAxis};

mod bars;
mod lines;
mod scatter;
pub use bars::{Bar, BarChart};
pub use lines::{log_ticks, LegendAt, LineChart, Series};
pub use scatter::{padded_range, pareto_front, Point, ScatterChart};

static FONT: Once = Once::new();
const FONT_NAME: &str = "sans-serif";

pub(super) fn ensure_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT_NAME, FontStyle::Normal, bytes)
            .ok()
            .expect("DejaVu Sans is a valid font");
    });
}

pub type ChartResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Bars and dots.
pub const MARK_COLOR: RGBColor = RGBColor(60, 90, 220);
/// The caveat's colour.
pub const CAVEAT_COLOR: RGBColor = RGBColor(200, 0, 0);
const NOTE_COLOR: RGBColor = RGBColor(70, 70, 70);
const GUIDE_COLOR: RGBColor = RGBColor(225, 225, 225);
const MARGIN: i32 = 12;
const VALUE_AREA: i32 = 80;

/// What every chart carries above its plot: the title, a caveat about the data drawn in red
/// (e.g. random weights), and notes (how to read it).
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub title: String,
    pub caveat: Option<String>,
    pub notes: Vec<String>,
}

impl Frame {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    pub fn with_caveat(mut self, caveat: Option<String>) -> Self {
        self.caveat = caveat;
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The header's lines at `width` pixels: (text, font size, colour, role), wrapped.
    fn lines(&self, width: i32) -> Vec<(String, u32, RGBColor, Role)> {
        ensure_font();
        let mut out = vec![];
        for l in wrap(&self.title, 22, width - 40) {
            out.push((l, 22, BLACK, Role::Title));
        }
        if let Some(c) = &self.caveat {
            for l in wrap(c, 16, width - 40) {
                out.push((l, 16, CAVEAT_COLOR, Role::Caveat));
            }
        }
        for n in &self.notes {
            for l in wrap(n, 14, width - 40) {
                out.push((l, 14, NOTE_COLOR, Role::Note));
            }
        }
        out
    }

    fn height(&self, width: i32) -> i32 {
        10 + self
            .lines(width)
            .iter()
            .map(|(t, px, ..)| text_size(t, *px).1 + 6)
            .sum::<i32>()
            + 6
    }

    /// Draws the header across the top of `root`; returns the area below it.
    /// Starts a chart on `root`: a white page and this header; returns the record of what went
    /// where so far and the area below the header, where the chart's body goes.
    fn begin<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> ChartResult<(Drawn, DrawingArea<DB, Shift>)>
    where
        DB::ErrorType: 'static,
    {
        let mut drawn = Drawn {
            size: root.dim_in_pixel(),
            ..Drawn::default()
        };
        root.fill(&WHITE)?;
        let body = self.draw(root, &mut drawn)?;
        Ok((drawn, body))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        drawn: &mut Drawn,
    ) -> ChartResult<DrawingArea<DB, Shift>>
    where
        DB::ErrorType: 'static,
    {
        let w = root.dim_in_pixel().0 as i32;
        let mut y = 10;
        for (text, px, color, role) in self.lines(w) {
            let (tw, th) = text_size(&text, px);
            let x = ((w - tw) / 2).max(0);
            root.draw(&Text::new(
                text.clone(),
                (x, y),
                (FONT_NAME, px).into_font().color(&color),
            ))?;
            drawn.texts.push(Placed {
                text,
                rect: Rect::new(x, y, x + tw, y + th),
                role,
            });
            y += th + 6;
        }
        Ok(root.split_vertically(self.height(w)).1)
    }
}

/// What a chart drew, in pixels: the plotting area, the texts it placed itself (title, caveat,
/// notes, category and point labels; not plotters' tick labels), its marks (bars or dots, in
/// data order) and its value axis.
#[derive(Clone, Debug, Default)]
pub struct Drawn {
    pub size: (u32, u32),
    pub plot: Rect,
    pub texts: Vec<Placed>,
    pub marks: Vec<Rect>,
    pub value_axis: Option<ValueAxis>,
}

impl Drawn {
    pub fn texts_of(&self, role: Role) -> Vec<&Placed> {
        self.texts.iter().filter(|t| t.role == role).collect()
    }
}

/// A tick label without float noise: `1000`, `0.25`, `2e-5`.
pub fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() < 1e-3 || v.abs() >= 1e7 {
        return format!("{v:.0e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Any chart of a report.
#[derive(Clone, Debug)]
pub enum Chart {
    Bars(BarChart),
    Scatter(ScatterChart),
    Lines(LineChart),
}

impl From<BarChart> for Chart {
    fn from(c: BarChart) -> Self {
        Chart::Bars(c)
    }
}
impl From<ScatterChart> for Chart {
    fn from(c: ScatterChart) -> Self {
        Chart::Scatter(c)
    }
}
impl From<LineChart> for Chart {
    fn from(c: LineChart) -> Self {
        Chart::Lines(c)
    }
}

impl Chart {
    pub fn frame(&self) -> &Frame {
        match self {
            Chart::Bars(c) => &c.frame,
            Chart::Scatter(c) => &c.frame,
            Chart::Lines(c) => &c.frame,
        }
    }

    /// The image's size in pixels (the header grows with its lines).
    pub fn size(&self) -> (u32, u32) {
        ensure_font();
        match self {
            Chart::Bars(c) => c.size(),
            Chart::Scatter(c) => c.size(),
            Chart::Lines(c) => c.size(),
        }
    }

    /// Draws on `root` (of [`Chart::size`]) and says what went where.
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> ChartResult<Drawn>
    where
        DB::ErrorType: 'static,
    {
        ensure_font();
        match self {
            Chart::Bars(c) => c.draw(root),
            Chart::Scatter(c) => c.draw(root),
            Chart::Lines(c) => c.draw(root),
        }
    }

    /// Writes the chart as a PNG file: drawn into a temporary sibling (named `.png`, which the
    /// encoder goes by) and moved into place, so an interrupted draw never leaves half a chart.
    pub fn png(&self, path: &Path) -> ChartResult<Drawn> {
        let dir = crate::fs::parent_of(path);
        let tmp = tempfile::Builder::new()
            .prefix(&crate::fs::partial_prefix(path)?)
            .suffix(".png")
            .tempfile_in(dir)?
            .into_temp_path();
        let drawn = {
            let root = BitMapBackend::new(&tmp, self.size()).into_drawing_area();
            let d = self.draw(&root)?;
            root.present()?;
            d
        };
        crate::fs::publish_mode(&tmp, false)?;
        tmp.persist(path)?;
        Ok(drawn)
    }

    /// The chart's pixels (RGB, row-major) and what went where: what a test looks at.
    pub fn rgb(&self) -> ChartResult<(Vec<u8>, Drawn)> {
        let (w, h) = self.size();
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let drawn = {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let d = self.draw(&root)?;
            root.present()?;
            d
        };
        Ok((buf, drawn))
    }
}

/// Lines (one per series) on labelled axes, optionally a log y axis, as a PNG.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> ChartResult<()> {
    Chart::from(LineChart {
        frame: Frame::new(title),
        x_label: x_label.into(),
        y_label: y_label.into(),
        series: series.to_vec(),
        log_y,
        legend: LegendAt::UpperRight,
    })
    .png(path)
    .map(|_| ())
}

/// Points with labels and error bars and their Pareto front, as a PNG.
pub fn scatter_pareto(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[Point],
) -> ChartResult<()> {
    Chart::from(ScatterChart {
        frame: Frame::new(title),
        x_label: x_label.into(),
        y_label: y_label.into(),
        points: points.to_vec(),
    })
    .png(path)
    .map(|_| ())
}

/// Vertical bars, one per label, as a PNG (0 taken as meaningful: the axis starts there unless
/// the values span a decade and a half, then it is logarithmic).
pub fn bars(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    values: &[(String, f64)],
) -> ChartResult<()> {
    Chart::from(BarChart {
        frame: Frame::new(title),
        category_label: x_label.into(),
        value_label: y_label.into(),
        bars: values
            .iter()
            .map(|(l, v)| Bar::new(l.clone(), *v, None))
            .collect(),
        zero_meaningful: true,
        horizontal: false,
    })
    .png(path)
    .map(|_| ())
}

/// Horizontal bars with optional ± error bars, one row per label, as a PNG.
pub fn hbars(
    path: &Path,
    title: &str,
    value_label: &str,
    values: &[(String, f64, Option<f64>)],
) -> ChartResult<()> {
    Chart::from(BarChart {
        frame: Frame::new(title),
        category_label: String::new(),
        value_label: value_label.into(),
        bars: values
            .iter()
            .map(|(l, v, e)| Bar::new(l.clone(), *v, *e))
            .collect(),
        zero_meaningful: true,
        horizontal: true,
    })
    .png(path)
    .map(|_| ())
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
