//! The decisions charts make before drawing, as plain functions a test can call: how a value axis
//! is scaled ([`ValueAxis::plan`]), how big a text is, and where point labels go so that none
//! overlaps another ([`place_labels`]).

/// A box in pixels: `x0..x1` × `y0..y1` (y grows downwards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    pub fn new(x0: i32, y0: i32, x1: i32, y1: i32) -> Self {
        Self { x0, y0, x1, y1 }
    }

    pub fn width(&self) -> i32 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> i32 {
        self.y1 - self.y0
    }

    /// Whether the two boxes share any area (touching edges do not).
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn contains(&self, o: &Rect) -> bool {
        self.x0 <= o.x0 && o.x1 <= self.x1 && self.y0 <= o.y0 && o.y1 <= self.y1
    }

    fn shifted(&self, dx: i32, dy: i32) -> Rect {
        Rect::new(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)
    }

    /// Whether the segment `a`–`b` passes through the box (sampled every pixel).
    pub fn crossed_by(&self, a: (i32, i32), b: (i32, i32)) -> bool {
        let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).max(1);
        (0..=steps).any(|i| {
            let t = i as f64 / steps as f64;
            let x = a.0 as f64 + t * (b.0 - a.0) as f64;
            let y = a.1 as f64 + t * (b.1 - a.1) as f64;
            x >= self.x0 as f64 && x < self.x1 as f64 && y >= self.y0 as f64 && y < self.y1 as f64
        })
    }
}

/// A line drawn on a chart, in pixels.
pub type Segment = ((i32, i32), (i32, i32));

/// What a placed text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Title,
    /// a warning about the data (e.g. random weights), in red under the title
    Caveat,
    Note,
    /// a bar's label
    Category,
    /// a scatter point's label
    PointLabel,
}

/// A text a chart drew and the box it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub text: String,
    pub rect: Rect,
    pub role: Role,
}

/// How a value axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueAxis {
    pub min: f64,
    pub max: f64,
    pub log: bool,
}

impl ValueAxis {
    /// Values whose largest is at least this many times their smallest get a log axis (a decade
    /// and a half: on a linear axis the smallest bars shrink to a few pixels and cannot be told
    /// apart, e.g. drop-one KLs of 0.013 to 0.81).
    pub const LOG_RATIO: f64 = 30.0;

    /// The axis for `points` (value, ± error): logarithmic when the (positive) values span a
    /// decade and a half or more; else from 0 when 0 is meaningful; else around the data (so 36.7 and
    /// 37.6 look different), starting at 0 only when the data reach down near it anyway.
    pub fn plan(points: &[(f64, Option<f64>)], zero_meaningful: bool) -> Self {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|(v, _)| v.is_finite())
            .map(|&(v, e)| (v, e.filter(|e| e.is_finite()).unwrap_or(0.0).abs()))
            .collect();
        if pts.is_empty() {
            return Self {
                min: 0.0,
                max: 1.0,
                log: false,
            };
        }
        let vmin = pts.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let vmax = pts.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        if vmin > 0.0 && vmax / vmin >= Self::LOG_RATIO {
            let lo = pts
                .iter()
                .map(|&(v, e)| if v - e > 0.0 { v - e } else { v })
                .fold(f64::MAX, f64::min);
            let hi = pts.iter().map(|&(v, e)| v + e).fold(f64::MIN, f64::max);
            return Self {
                min: lo / 1.5,
                max: hi * 1.5,
                log: true,
            };
        }
        let lo = pts.iter().map(|&(v, e)| v - e).fold(f64::MAX, f64::min);
        let hi = pts.iter().map(|&(v, e)| v + e).fold(f64::MIN, f64::max);
        let span = if hi > lo {
            hi - lo
        } else {
            (hi.abs() * 0.1).max(1e-9)
        };
        let (min, max) = if zero_meaningful {
            let min = if lo < 0.0 { lo - 0.08 * span } else { 0.0 };
            let max = if hi > 0.0 {
                hi + 0.08 * (hi - min)
            } else {
                0.0
            };
            (min, max)
        } else {
            let min = lo - 0.12 * span;
            // the data reach down near 0 anyway: start there
            let min = if lo >= 0.0 && min <= 0.0 { 0.0 } else { min };
            (min, hi + 0.12 * span)
        };
        Self {
            min,
            max: if max > min { max } else { min + 1.0 },
            log: false,
        }
    }

    /// Whether the axis starts above 0 (a linear axis that does not show 0).
    pub fn truncated(&self) -> bool {
        !self.log && self.min > 0.0
    }

    /// The axis title, saying how the axis is scaled when that is not the plain 0-based one.
    pub fn describe(&self, label: &str) -> String {
        if self.log {
            format!("{label} (log scale)")
        } else if self.truncated() {
            format!("{label} (axis does not start at 0)")
        } else {
            label.to_string()
        }
    }
}

/// The box `text` covers at `px` pixels in the charts' font, (width, height).
pub fn text_size(text: &str, px: u32) -> (i32, i32) {
    use plotters::style::IntoFont;
    super::chart::ensure_font();
    let (w, h) = ("sans-serif", px)
        .into_font()
        .box_size(text)
        .unwrap_or((text.chars().count() as u32 * px * 6 / 10, px));
    (w as i32, (h as i32).max(px as i32))
}

/// `text` broken at spaces into lines no wider than `width` pixels at `px`.
pub fn wrap(text: &str, px: u32, width: i32) -> Vec<String> {
    let mut lines: Vec<String> = vec![];
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_size(&candidate, px).0 > width {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Where each label of size `sizes[i]` goes for the point at `anchors[i]`: beside it (right,
/// else left), else moved up or down a line at a time until it overlaps no label placed before,
/// no obstacle (the points' markers), crosses no line (the Pareto front, error bars) and stays
/// inside `area`. Points are taken top to bottom. A label that fits nowhere goes right of its
/// point, inside `area`.
pub fn place_labels(
    anchors: &[(i32, i32)],
    sizes: &[(i32, i32)],
    area: Rect,
    obstacles: &[Rect],
    lines: &[Segment],
) -> Vec<Rect> {
    const GAP: i32 = 8;
    const TRIES: i32 = 30;
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| (anchors[i].1, anchors[i].0));
    let mut placed: Vec<Option<Rect>> = vec![None; anchors.len()];
    for &i in &order {
        let ((ax, ay), (w, h)) = (anchors[i], sizes[i]);
        let right = Rect::new(ax + GAP, ay - h / 2, ax + GAP + w, ay - h / 2 + h);
        let left = Rect::new(ax - GAP - w, right.y0, ax - GAP, right.y1);
        let free = |r: &Rect| {
            area.contains(r)
                && !placed.iter().flatten().any(|p| p.overlaps(r))
                && !obstacles.iter().any(|o| o.overlaps(r))
                && !lines.iter().any(|&(a, b)| r.crossed_by(a, b))
        };
        let mut found = None;
        'search: for k in 0..=TRIES {
            for dy in if k == 0 { vec![0] } else { vec![k, -k] } {
                for side in [right, left] {
                    let r = side.shifted(0, dy * (h + 2));
                    if free(&r) {
                        found = Some(r);
                        break 'search;
                    }
                }
            }
        }
        placed[i] = Some(found.unwrap_or_else(|| {
            let dx = (area.x1 - right.x1).min(0) + (area.x0 - right.x0).max(0);
            let dy = (area.y1 - right.y1).min(0) + (area.y0 - right.y0).max(0);
            right.shifted(dx, dy)
        }));
    }
    placed.into_iter().map(|p| p.unwrap_or_default()).collect()
}
