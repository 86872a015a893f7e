//! `compare`'s plot: messages per second at the sink against seconds since each side started,
//! one line per side, as a hand-written SVG (the throttle benchmark's polyline helper; no
//! plotting crate).

use std::fmt::Write as _;

use super::report::SideReport;
use crate::throttle_svg::{axes, polyline, Axes};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 32.0;

/// Messages per second over the second before each sample (samples less than a second in
/// are skipped).
pub fn rate(timeline: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(t, count) in timeline {
        while j < timeline.len() && t - timeline[j].0 > 1.0 {
            j += 1;
        }
        let (t0, c0) = timeline[j.saturating_sub(1)];
        if t - t0 >= 0.99 {
            out.push((t, count.saturating_sub(c0) as f64 / (t - t0)));
        }
    }
    out
}

/// The plot of every side's rate.
pub fn plot(sides: &[SideReport], title: &str) -> String {
    let rates: Vec<Vec<(f64, f64)>> = sides.iter().map(|s| rate(&s.timeline)).collect();
    let t_max = sides
        .iter()
        .filter_map(|s| s.timeline.last().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = rates.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let map = |t: f64, v: f64| (LEFT + w * t / t_max, TOP + h * (1.0 - (v / y_max).min(1.0)));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"18\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|s| t_max / s <= 12.0)
        .unwrap_or(300.0);
    axes(
        &mut out,
        &Axes {
            left: LEFT,
            top: TOP,
            w,
            h,
            v_top: y_max / 1.1,
            t_max,
            step,
            label_y: HEIGHT - 12.0,
        },
        map,
    );
    for (i, (side, points)) in sides.iter().zip(&rates).enumerate() {
        let colour = side.key.colour();
        polyline(
            &mut out,
            points,
            map,
            &format!("stroke=\"{colour}\" stroke-width=\"1.5\""),
        );
        let y = TOP + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{y:.1}\" fill=\"{colour}\">{} ({:.0}/s)</text>",
            WIDTH - RIGHT + 8.0,
            escape(&side.name),
            side.msgs_per_sec
        );
    }
    out.push_str("</svg>\n");
    out
}

/// XML text escaping.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_per_second_over_the_last_second() {
        let timeline: Vec<(f64, u64)> = (0..=20)
            .map(|i| (f64::from(i) * 0.25, i as u64 * 50))
            .collect();
        let r = rate(&timeline);
        assert!(!r.is_empty());
        for (_, v) in r {
            assert!((v - 200.0).abs() < 1e-9, "{v}");
        }
    }
}
