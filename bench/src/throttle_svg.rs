//! The rate-against-time plot of the `throttle` benchmark, as a hand-written SVG (no plotting
//! crate: a few polylines and labels do not justify one and its font handling). One panel per
//! run: the sink's limit (dashed), the farm-wide learnt rate, and what the sink accepted per
//! second.

use std::fmt::Write;

use crate::throttle::Run;

const WIDTH: f64 = 760.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 28.0;

/// Accepted messages per second at each sample (over the second before it).
fn accepted_per_second(run: &Run) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for (i, s) in run.samples.iter().enumerate() {
        let earlier = run.samples[..i].iter().rev().find(|e| s.t - e.t >= 1.0);
        if let Some(e) = earlier {
            out.push((s.t, (s.accepted - e.accepted) as f64 / (s.t - e.t)));
        }
    }
    out
}

pub(crate) fn polyline(
    out: &mut String,
    points: &[(f64, f64)],
    map: impl Fn(f64, f64) -> (f64, f64),
    style: &str,
) {
    if points.is_empty() {
        return;
    }
    let _ = write!(out, "<polyline fill=\"none\" {style} points=\"");
    for (x, y) in points {
        let (px, py) = map(*x, *y);
        let _ = write!(out, "{px:.1},{py:.1} ");
    }
    out.push_str("\"/>\n");
}

/// A panel's frame and labels: see [`axes`].
pub(crate) struct Axes {
    /// Left edge of the frame.
    pub left: f64,
    /// Top edge of the frame.
    pub top: f64,
    /// Frame width.
    pub w: f64,
    /// Frame height.
    pub h: f64,
    /// Largest rate labelled (labels at 0, 1/4 ... of it).
    pub v_top: f64,
    /// Last second of the time axis.
    pub t_max: f64,
    /// Seconds between time labels.
    pub step: f64,
    /// Baseline of the time labels.
    pub label_y: f64,
}

/// Draws a panel's frame, its rate labels (`N/s`) and its time labels (`N s`); `map` turns
/// (seconds, rate) into pixels.
pub(crate) fn axes(out: &mut String, a: &Axes, map: impl Fn(f64, f64) -> (f64, f64)) {
    let _ = writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
        a.left, a.top, a.w, a.h
    );
    for k in 0..=4 {
        let v = a.v_top * f64::from(k) / 4.0;
        let (_, py) = map(0.0, v);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}/s</text>",
            a.left - 4.0,
            py + 4.0
        );
    }
    let mut t = 0.0;
    while t <= a.t_max {
        let (px, _) = map(t, 0.0);
        let _ = writeln!(
            out,
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0} s</text>",
            a.label_y
        );
        t += a.step.max(0.1);
    }
}

/// The plot of `runs`.
pub fn plot(runs: &[Run]) -> String {
    let height = PANEL * runs.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for (i, run) in runs.iter().enumerate() {
        let y0 = PANEL * i as f64;
        let accepted = accepted_per_second(run);
        let limit: Vec<(f64, f64)> = run.samples.iter().map(|s| (s.t, s.limit)).collect();
        let learnt: Vec<(f64, f64)> = run
            .samples
            .iter()
            .filter(|s| s.learnt > 0.0)
            .map(|s| (s.t, s.learnt))
            .collect();
        let t_max = run.samples.last().map_or(1.0, |s| s.t).max(1.0);
        let y_max = limit
            .iter()
            .chain(&accepted)
            .chain(&learnt)
            .map(|p| p.1)
            .fold(1.0, f64::max)
            * 1.15;
        let (w, h) = (WIDTH - LEFT - RIGHT, PANEL - TOP - BOTTOM);
        let map = |t: f64, v: f64| {
            (
                LEFT + w * t / t_max,
                y0 + TOP + h * (1.0 - (v / y_max).min(1.0)),
            )
        };
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            y0 + 16.0,
            run.name
        );
        let step = if t_max > 60.0 { 10.0 } else { 5.0 };
        axes(
            &mut out,
            &Axes {
                left: LEFT,
                top: y0 + TOP,
                w,
                h,
                v_top: y_max / 1.15,
                t_max,
                step,
                label_y: y0 + PANEL - 12.0,
            },
            map,
        );
        polyline(
            &mut out,
            &limit,
            map,
            "stroke=\"#888\" stroke-dasharray=\"5,4\"",
        );
        polyline(
            &mut out,
            &accepted,
            map,
            "stroke=\"#2a7\" stroke-width=\"1.2\"",
        );
        polyline(
            &mut out,
            &learnt,
            map,
            "stroke=\"#c33\" stroke-width=\"1.6\"",
        );
        let legend = y0 + 16.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{legend:.1}\" fill=\"#888\">limit</text>\
             <text x=\"{:.1}\" y=\"{legend:.1}\" fill=\"#2a7\">accepted/s</text>\
             <text x=\"{:.1}\" y=\"{legend:.1}\" fill=\"#c33\">learnt (farm-wide)</text>",
            WIDTH - 300.0,
            WIDTH - 250.0,
            WIDTH - 160.0
        );
    }
    out.push_str("</svg>\n");
    out
}
