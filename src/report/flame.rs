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
use crate::model::{folded, Aggregate, ThreadState};
use resvg::{tiny_skia, usvg};
use std::sync::{Arc, OnceLock};

/// Deepest stack drawn; deeper stacks are cut at this depth so the image stays a
/// readable, bounded size (16 px per level).
const MAX_DRAWN_DEPTH: usize = 96;
/// Largest PNG drawn, in pixels (width x height), to bound memory per report.
const MAX_PIXELS: u64 = 1200 * 2400;
/// Font families preferred, in order; DejaVu Sans is Debian's `fonts-dejavu-core`.
const FONT_FAMILIES: [&str; 5] = ["DejaVu Sans", "Verdana", "Liberation Sans", "Arial", "Noto Sans"];

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
    let on_cpu = [ThreadState::Runnable];
    let mut profile =
        aggregate.to_profile_counting("report", &on_cpu, 0, 1, |s| (s.nanos as f64 * scale).round() as u64);
    for stack in &mut profile.stacks {
        stack.truncate(MAX_DRAWN_DEPTH);
    }
    // The model's folded writer does the sanitising and merging.
    folded::to_folded(&profile, &on_cpu)
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
    // Inferno quotes the whole value as one family name, so name one that is installed.
    options.font_type = fonts().1.clone();
    // Drawn at 1200 px, shown at about 630 px in a mail: a large font keeps names legible.
    options.image_width = Some(1200);
    options.font_size = 20;
    options.frame_height = 30;
    options.no_javascript = true;
    // Frames under a pixel wide cannot be seen in the PNG; leaving them out keeps the
    // SVG small and the rendering fast.
    options.min_width = 1.0;
    options.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, diff.lines(), &mut svg)
        .map_err(|e| ReportError::Flame(format!("drawing: {e}")))?;
    let svg = String::from_utf8(svg).map_err(|e| ReportError::Flame(e.to_string()))?;
    // The interactive search and zoom labels mean nothing in a still image.
    Ok(svg.replace(">Search</text>", "></text>").replace(">Reset Zoom</text>", "></text>"))
}

/// System fonts, loaded once per process (a directory scan), with the family to draw
/// with: the first of `FONT_FAMILIES` installed, else any installed family.
fn fonts() -> &'static (Arc<usvg::fontdb::Database>, String) {
    static FONTS: OnceLock<(Arc<usvg::fontdb::Database>, String)> = OnceLock::new();
    FONTS.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_system_fonts();
        let installed = |family: &str| db.faces().any(|f| f.families.iter().any(|(n, _)| n == family));
        let family = FONT_FAMILIES
            .iter()
            .find(|f| installed(f))
            .map(|f| f.to_string())
            .or_else(|| db.faces().next().and_then(|f| f.families.first()).map(|(n, _)| n.clone()));
        let family = match family {
            Some(f) => f,
            None => {
                tracing::warn!(
                    "no system fonts found: flame graph PNGs will have no frame names; install fonts-dejavu-core"
                );
                FONT_FAMILIES[0].to_string()
            }
        };
        db.set_sans_serif_family(family.clone());
        (Arc::new(db), family)
    })
}

/// Renders SVG text to PNG at its own size (scaled down if over the pixel bound).
pub fn svg_to_png(svg: &str) -> Result<Png, ReportError> {
    let (fontdb, family) = fonts();
    let options = usvg::Options { fontdb: fontdb.clone(), font_family: family.clone(), ..Default::default() };
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
