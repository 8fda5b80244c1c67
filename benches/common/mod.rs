//! What the benches share: the shape of a typical interaction.

use mcplog::event::Action;

/// The events of one typical interaction: a start, two progress reports 10 ms apart, and a
/// terminal event (`error` if `failed`, else `complete`) `duration_s` after the start.
pub fn lifecycle(start: f64, duration_s: f64, failed: bool) -> [(Action, f64); 4] {
    let last = if failed {
        Action::Error
    } else {
        Action::Complete
    };
    [
        (Action::Start, start),
        (Action::Progress, start + 0.01),
        (Action::Progress, start + 0.02),
        (last, start + duration_s),
    ]
}
