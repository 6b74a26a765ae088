//! The differential flame graph of a win: inferno's differential SVG, rendered to PNG
//! with resvg because mail clients do not show SVG.
//!
//! In: the before and after `Aggregate`s and the host-seconds each covers. Out: SVG
//! text, or a `Png` (bytes and size). Must not: touch the network; it reads only the
//! system font directories (once per process) so that frame names are drawn.
//!
//! The graph has the *before* shape (frame widths are before's CPU per host) and the
//! colours of the change: blue where the after side spends less CPU per host, red
//! where it spends more. A frame that the fix removed is still visible, in blue.

use super::ReportError;
use crate::model::{folded, Profile, Sample, ThreadState};
use crate::store::Aggregate;
use resvg::{tiny_skia, usvg};
use std::sync::{Arc, OnceLock};

/// Deepest stack drawn; deeper stacks are cut at this depth so the image stays a
/// readable, bounded size (16 px per level).
const MAX_DRAWN_DEPTH: usize = 96;
/// Largest PNG drawn, in pixels (width x height), to bound memory per report.
const MAX_PIXELS: u64 = 1200 * 2400;
/// Font families asked for, in order; DejaVu Sans is Debian's `fonts-dejavu-core`.
const FONT_FAMILIES: &str = "DejaVu Sans, Verdana, Liberation Sans, sans-serif";

/// A rendered PNG image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Png {
    /// The encoded PNG file.
    pub bytes: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Folded text of an aggregate's on-CPU samples, counted in microseconds of CPU per
/// host-second (so both sides share one unit whatever their window lengths).
fn folded_rate(aggregate: &Aggregate, host_seconds: f64) -> String {
    let scale = if host_seconds > 0.0 { 1.0 / (host_seconds * 1000.0) } else { 0.0 };
    let stacks: Vec<Vec<u32>> =
        aggregate.stacks.iter().map(|s| s.iter().copied().take(MAX_DRAWN_DEPTH).collect()).collect();
    let samples = aggregate
        .samples
        .iter()
        .filter(|s| s.state.is_cpu())
        .map(|s| Sample { stack: s.stack, state: s.state, count: (s.nanos as f64 * scale).round() as u64 })
        .collect();
    // The model's folded writer does the sanitising and merging; period is unused here.
    let profile = Profile { frames: aggregate.frames.clone(), stacks, samples, ..Profile::empty("report", 0, 1, 1) };
    folded::to_folded(&profile, &[ThreadState::Runnable])
}

/// The differential flame graph as SVG text. `before_host_seconds` and
/// `after_host_seconds` are W * Hp of each side.
pub fn differential_svg(
    before: &Aggregate,
    before_host_seconds: f64,
    after: &Aggregate,
    after_host_seconds: f64,
    title: &str,
) -> Result<String, ReportError> {
    let before_text = folded_rate(before, before_host_seconds);
    let after_text = folded_rate(after, after_host_seconds);
    // Inferno draws the second column's widths and colours by (second - first): feed
    // (after, before) and negate so widths are before's and blue means "less after".
    let mut diff = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        after_text.as_bytes(),
        before_text.as_bytes(),
        &mut diff,
    )
    .map_err(|e| ReportError::Flame(format!("differential folding: {e}")))?;
    let diff = String::from_utf8(diff).map_err(|e| ReportError::Flame(e.to_string()))?;
    if diff.trim().is_empty() {
        return Err(ReportError::Flame("neither side has on-CPU samples to draw".to_string()));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some("Width: CPU before. Blue: less CPU after the change; red: more.".to_string());
    options.count_name = "µs CPU per host-second".to_string();
    options.negate_differentials = true;
    options.font_type = FONT_FAMILIES.to_string();
    options.image_width = Some(1200);
    options.no_javascript = true;
    options.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, diff.lines(), &mut svg)
        .map_err(|e| ReportError::Flame(format!("drawing: {e}")))?;
    String::from_utf8(svg).map_err(|e| ReportError::Flame(e.to_string()))
}

/// System fonts, loaded once per process (a directory scan).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            if db.is_empty() {
                tracing::warn!("no system fonts found: flame graph PNGs will have no frame names; install fonts-dejavu-core");
            } else if db.faces().any(|f| f.families.iter().any(|(n, _)| n == "DejaVu Sans")) {
                db.set_sans_serif_family("DejaVu Sans");
            }
            Arc::new(db)
        })
        .clone()
}

/// Renders SVG text to PNG at its own size (scaled down if over the pixel bound).
pub fn svg_to_png(svg: &str) -> Result<Png, ReportError> {
    let options = usvg::Options { fontdb: fonts(), font_family: "DejaVu Sans".to_string(), ..Default::default() };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| ReportError::Flame(format!("parsing SVG: {e}")))?;
    let size = tree.size();
    let (w, h) = (size.width().ceil().max(1.0), size.height().ceil().max(1.0));
    let scale = ((MAX_PIXELS as f64 / (w as f64 * h as f64)).sqrt()).min(1.0) as f32;
    let (pw, ph) = ((w * scale).ceil() as u32, (h * scale).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(pw, ph)
        .ok_or_else(|| ReportError::Flame(format!("cannot allocate a {pw}x{ph} image")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    let bytes = pixmap.encode_png().map_err(|e| ReportError::Flame(format!("encoding PNG: {e}")))?;
    Ok(Png { bytes, width: pw, height: ph })
}

/// The differential flame graph as PNG (see `differential_svg`).
pub fn differential_png(
    before: &Aggregate,
    before_host_seconds: f64,
    after: &Aggregate,
    after_host_seconds: f64,
    title: &str,
) -> Result<Png, ReportError> {
    svg_to_png(&differential_svg(before, before_host_seconds, after, after_host_seconds, title)?)
}
